// Protocol scenarios driven by the official RocketMQ 5 Go client (github.com/apache/rocketmq-clients/golang/v5)
// with its default settings: TLS on (EnableSsl, certificate not verified), so every scenario also proves that
// ferromq's client port takes TLS by default.
//
// Run by tests/suites/30-clients.sh; topics and groups come from the environment (see ../lib.sh). Each
// scenario prints `SCENARIO go <name> PASS|FAIL|SKIP <detail>` and appends it to FERROMQ_RESULTS_FILE. Exit
// code 0 only if no scenario failed. With FERROMQ_MODE=auth it runs the authentication and authorization
// scenarios of tests/suites/35-auth.sh instead (auth.go).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	"github.com/apache/rocketmq-clients/golang/v5/credentials"
)

const (
	maxBody       = 4 * 1024 * 1024
	topicNotFound = 40402
	earlySlackMs  = 5
	txWindow      = 15 * time.Second
	await         = 5 * time.Second
	invisible     = 30 * time.Second
)

var (
	endpoint    = env("FERROMQ_ENDPOINT", "127.0.0.1:8081")
	groupPrefix = env("FERROMQ_GROUP_PREFIX", "go_g")
	retrySecs   = atoi(env("FERROMQ_RETRY_INVISIBLE_SECS", "10"))
	dlqAttempts = atoi(env("FERROMQ_DLQ_MAX_ATTEMPTS", "2"))
	run         = fmt.Sprintf("%08x", time.Now().UnixNano()&0xffffffff)
	producer    rmq.Producer
	failures    int
	skipped     int
	passDetail  string
)

var scenarios = []string{"send_receive_ack", "tag_filter", "sql_filter", "redelivery", "fifo_order", "dead_letter",
	"push_consume", "push_retry", "unknown_topic", "oversized_body", "delay", "recall", "transaction", "priority"}

func env(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

func topic(kind string) string { return env("FERROMQ_TOPIC_"+strings.ToUpper(kind), "go_"+kind) }
func group(kind string) string { return groupPrefix + "_" + kind }

// failed is an assertion failure inside a scenario; skip means the scenario cannot run against this target.
type failed struct{ msg string }
type skip struct{ msg string }

func check(ok bool, format string, a ...any) {
	if !ok {
		panic(failed{fmt.Sprintf(format, a...)})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(failed{err.Error()})
	}
	return v
}

func config(g string) *rmq.Config {
	// Credentials are required by the Go client's config validation; empty ones sign nothing useful and
	// ferromq ignores them with auth off.
	return &rmq.Config{Endpoint: endpoint, ConsumerGroup: g, Credentials: &credentials.SessionCredentials{}}
}

func message(t string, body []byte, tag string, keys []string, props map[string]string, mgroup string) *rmq.Message {
	m := &rmq.Message{Topic: t, Body: body}
	if tag != "" {
		m.SetTag(tag)
	}
	if len(keys) > 0 {
		m.SetKeys(keys...)
	}
	for k, v := range props {
		m.AddProperty(k, v)
	}
	if mgroup != "" {
		m.SetMessageGroup(mgroup)
	}
	return m
}

func send(p rmq.Producer, m *rmq.Message) *rmq.SendReceipt {
	r := must(p.Send(context.Background(), m))
	check(len(r) == 1 && r[0].MessageID != "", "send receipt without message id: %v", r)
	return r[0]
}

func simple(kind, t string, f *rmq.FilterExpression) (rmq.SimpleConsumer, error) {
	c, err := rmq.NewSimpleConsumer(config(group(kind)), rmq.WithSimpleAwaitDuration(await),
		rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{t: f}))
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

func mustSimple(kind, t string, f *rmq.FilterExpression) rmq.SimpleConsumer {
	return must(simple(kind, t, f))
}

// receive returns the batch; the Go client reports an empty long poll as MESSAGE_NOT_FOUND (40401).
func receive(c rmq.SimpleConsumer, max int32, inv time.Duration) []*rmq.MessageView {
	l, err := c.Receive(context.Background(), max, inv)
	var rpc *rmq.ErrRpcStatus
	if errors.As(err, &rpc) && rpc.GetCode() == 40401 {
		return nil
	}
	if err != nil {
		panic(failed{"receive: " + err.Error()})
	}
	return l
}

func ack(c rmq.SimpleConsumer, m *rmq.MessageView) {
	if err := c.Ack(context.Background(), m); err != nil {
		panic(failed{"ack " + m.GetMessageId() + ": " + err.Error()})
	}
}

func tagOf(m *rmq.MessageView) string {
	if t := m.GetTag(); t != nil {
		return *t
	}
	return ""
}

func mgroupOf(m *rmq.MessageView) string {
	if g := m.GetMessageGroup(); g != nil {
		return *g
	}
	return ""
}

func bodyFor(i int, scenario string) []byte {
	head := []byte(fmt.Sprintf("%s:%s:%d:", scenario, run, i))
	n := (i*131)%3000 + 1
	b := make([]byte, len(head)+n)
	copy(b, head)
	for j := 0; j < n; j++ {
		b[len(head)+j] = byte((i*7 + j) % 256)
	}
	return b
}

func first10(p []string) string {
	if len(p) > 10 {
		p = p[:10]
	}
	return strings.Join(p, "; ")
}

func sortedKeys(ks []string) string {
	c := append([]string(nil), ks...)
	sort.Strings(c)
	return strings.Join(c, ",")
}

func nowMs() int64 { return time.Now().UnixMilli() }

// ---- scenarios ----

func sendReceiveAck() {
	t := topic("normal")
	n := 20
	type want struct {
		body  []byte
		tag   string
		keys  string
		props map[string]string
	}
	expected := map[string]want{}
	for i := 0; i < n; i++ {
		tag := "TagB"
		if i%2 == 0 {
			tag = "TagA"
		}
		keys := []string{fmt.Sprintf("key-%s-%d", run, i), fmt.Sprintf("order-%d", i)}
		props := map[string]string{"seq": strconv.Itoa(i), "origin": "go", "text": "héllo wörld ✓"}
		body := bodyFor(i, "sra")
		if i == n-1 {
			body = make([]byte, 256*1024)
			_, _ = rand.Read(body)
		}
		r := send(producer, message(t, body, tag, keys, props, ""))
		expected[r.MessageID] = want{body, tag, sortedKeys(keys), props}
	}
	check(len(expected) == n, "duplicate message ids in send receipts")
	c := mustSimple("normal", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	acked := map[string]bool{}
	var problems []string
	end := time.Now().Add(60 * time.Second)
	for len(acked) < n && time.Now().Before(end) {
		for _, m := range receive(c, 32, invisible) {
			id := m.GetMessageId()
			e, ok := expected[id]
			if !ok {
				problems = append(problems, "unexpected message "+id)
				continue
			}
			if acked[id] {
				problems = append(problems, "acked message "+id+" delivered again")
				continue
			}
			if m.GetTopic() != t {
				problems = append(problems, id+": topic "+m.GetTopic())
			}
			if !bytes.Equal(m.GetBody(), e.body) {
				problems = append(problems, fmt.Sprintf("%s: body differs (len %d vs %d)", id, len(m.GetBody()), len(e.body)))
			}
			if tagOf(m) != e.tag {
				problems = append(problems, id+": tag "+tagOf(m)+" != "+e.tag)
			}
			if sortedKeys(m.GetKeys()) != e.keys {
				problems = append(problems, id+": keys "+sortedKeys(m.GetKeys())+" != "+e.keys)
			}
			for k, v := range e.props {
				if m.GetProperties()[k] != v {
					problems = append(problems, id+": property "+k+"="+m.GetProperties()[k])
				}
			}
			if m.GetDeliveryAttempt() != 1 {
				problems = append(problems, fmt.Sprintf("%s: delivery attempt %d on first delivery", id, m.GetDeliveryAttempt()))
			}
			ack(c, m)
			acked[id] = true
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	check(len(acked) == n, "received+acked %d of %d sent (lost %d)", len(acked), n, n-len(acked))
	for round := 0; round < 2; round++ {
		again := receive(c, 32, invisible)
		check(len(again) == 0, "%d message(s) delivered after everything was acked", len(again))
	}
}

func tagFilter() {
	t := topic("filter")
	sent := map[string]map[string]bool{"A": {}, "B": {}, "C": {}}
	for i := 0; i < 15; i++ {
		tag := string("ABC"[i%3])
		r := send(producer, message(t, []byte(fmt.Sprintf("filter %s %d %s", run, i, tag)), tag, nil, nil, ""))
		sent[tag][r.MessageID] = true
	}
	c := mustSimple("filter", t, rmq.NewFilterExpression("A || B"))
	defer c.GracefulStop()
	got := map[string]string{}
	end := time.Now().Add(60 * time.Second)
	for rounds := 0; time.Now().Before(end) && rounds < 2; {
		if len(got) >= 10 {
			rounds++
		}
		for _, m := range receive(c, 32, invisible) {
			got[m.GetMessageId()] = tagOf(m)
			ack(c, m)
		}
	}
	var wrong []string
	for id, tag := range got {
		if tag != "A" && tag != "B" {
			wrong = append(wrong, id+" tag "+tag)
		}
	}
	check(len(wrong) == 0, "filter 'A || B' delivered: %v", wrong)
	missing := 0
	for _, tag := range []string{"A", "B"} {
		for id := range sent[tag] {
			if _, ok := got[id]; !ok {
				missing++
			}
		}
	}
	check(missing == 0, "%d A/B message(s) never delivered", missing)
}

func sqlFilter() {
	t := topic("filter")
	expr := "run = '" + run + "' AND region IS NOT NULL AND ((amount >= 100 AND region = 'eu') OR amount BETWEEN 10 AND 30)"
	want := map[string]bool{}
	for i := 0; i < 30; i++ {
		props := map[string]string{"run": run, "amount": strconv.Itoa(i * 10)}
		region := ""
		if i%5 != 0 {
			region = "us"
			if i%2 == 0 {
				region = "eu"
			}
			props["region"] = region
		}
		r := send(producer, message(t, []byte(fmt.Sprintf("sql %s %d", run, i)), "S", nil, props, ""))
		if region != "" && ((i*10 >= 100 && region == "eu") || (i*10 >= 10 && i*10 <= 30)) {
			want[r.MessageID] = true
		}
	}
	func() {
		c := mustSimple("sql", t, rmq.NewFilterExpressionWithType(expr, rmq.SQL92))
		defer c.GracefulStop()
		got := map[string]bool{}
		end := time.Now().Add(60 * time.Second)
		for rounds := 0; time.Now().Before(end) && rounds < 2; {
			if len(got) >= len(want) {
				rounds++
			}
			for _, m := range receive(c, 32, invisible) {
				got[m.GetMessageId()] = true
				ack(c, m)
			}
		}
		extra, missing := 0, 0
		for id := range got {
			if !want[id] {
				extra++
			}
		}
		for id := range want {
			if !got[id] {
				missing++
			}
		}
		check(extra == 0 && missing == 0, "SQL filter: %d matching message(s) missing, %d non-matching delivered", missing, extra)
	}()
	// A malformed expression is refused (ILLEGAL_FILTER_EXPRESSION 40010): at start (the Telemetry settings
	// answer) or on receive, never silently matched. ferromq refuses it in the settings answer (a status, no
	// settings); this Go client then logs "Command is nil" and its Start() waits for settings forever, so a
	// start that has not returned after 10 s counts as the refusal (the blocked client is left behind).
	bad, err := rmq.NewSimpleConsumer(config(group("sqlbad")), rmq.WithSimpleAwaitDuration(await),
		rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{
			t: rmq.NewFilterExpressionWithType("amount >>> 5", rmq.SQL92)}))
	if err != nil {
		return
	}
	started := make(chan error, 1)
	go func() { started <- bad.Start() }()
	select {
	case err := <-started:
		if err != nil {
			return
		}
	case <-time.After(10 * time.Second):
		return
	}
	defer bad.GracefulStop()
	_, err = bad.Receive(context.Background(), 8, invisible)
	check(err != nil, "a malformed SQL expression was accepted on receive")
	d := err.Error()
	check(strings.Contains(d, "40010") || strings.Contains(strings.ToUpper(d), "FILTER"), "unexpected refusal: %s", d)
}

func redelivery() {
	t := topic("retry")
	body := []byte("redeliver me " + run)
	id := send(producer, message(t, body, "retry", []string{"rk-" + run}, nil, "")).MessageID
	c := mustSimple("retry", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	retryInv := time.Duration(retrySecs) * time.Second
	var first *rmq.MessageView
	for end := time.Now().Add(60 * time.Second); first == nil && time.Now().Before(end); {
		for _, m := range receive(c, 1, retryInv) {
			first = m
		}
	}
	check(first != nil, "message never delivered")
	tFirst := time.Now()
	check(first.GetMessageId() == id, "unexpected message %s", first.GetMessageId())
	check(first.GetDeliveryAttempt() == 1, "first delivery attempt %d", first.GetDeliveryAttempt())
	var second *rmq.MessageView
	for end := time.Now().Add(time.Duration(retrySecs+40) * time.Second); second == nil && time.Now().Before(end); {
		for _, m := range receive(c, 1, invisible) {
			check(m.GetMessageId() == id, "unexpected message %s", m.GetMessageId())
			second = m
		}
	}
	check(second != nil, "not redelivered within %d s", retrySecs+40)
	waited := time.Since(tFirst).Seconds()
	check(waited >= float64(retrySecs)-1.5, "redelivered after %.1f s < invisible %d s", waited, retrySecs)
	check(second.GetDeliveryAttempt() == 2, "redelivery has delivery attempt %d, want 2", second.GetDeliveryAttempt())
	check(bytes.Equal(second.GetBody(), body), "redelivered body differs")
	ack(c, second)
	for end := time.Now().Add(time.Duration(retrySecs+2) * time.Second); time.Now().Before(end); {
		again := receive(c, 1, retryInv)
		check(len(again) == 0, "acked message came back (attempt %d)", func() int32 {
			if len(again) > 0 {
				return again[0].GetDeliveryAttempt()
			}
			return 0
		}())
	}
}

func fifoOrder() {
	t := topic("fifo")
	perGroup := 6
	var groups []string
	for g := 0; g < 4; g++ {
		groups = append(groups, fmt.Sprintf("mg%d-%s", g, run))
	}
	for s := 0; s < perGroup; s++ {
		for _, g := range groups {
			send(producer, message(t, []byte(fmt.Sprintf("%s|%d", g, s)), "fifo", nil, map[string]string{"seq": strconv.Itoa(s)}, g))
		}
	}
	next := map[string]int{}
	for _, g := range groups {
		next[g] = 0
	}
	var problems []string
	valid := func(m *rmq.MessageView, held string) bool {
		g := mgroupOf(m)
		s, err := strconv.Atoi(m.GetProperties()["seq"])
		if err != nil {
			s = -1
		}
		if _, ok := next[g]; !ok {
			problems = append(problems, "message with group "+g)
			return false
		}
		if g == held {
			problems = append(problems, fmt.Sprintf("%s seq %d delivered while seq %d is unacked", g, s, next[g]))
			return false
		}
		if s != next[g] {
			problems = append(problems, fmt.Sprintf("%s: got seq %d, expected %d", g, s, next[g]))
			return false
		}
		if string(m.GetBody()) != fmt.Sprintf("%s|%d", g, s) {
			problems = append(problems, fmt.Sprintf("%s seq %d: body differs", g, s))
		}
		return true
	}
	c := mustSimple("fifo", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	var held *rmq.MessageView
	for end := time.Now().Add(60 * time.Second); held == nil && time.Now().Before(end); {
		for _, m := range receive(c, 1, invisible) {
			held = m
		}
	}
	check(held != nil, "no FIFO message delivered")
	check(valid(held, ""), "%s", first10(problems))
	hg := mgroupOf(held)
	// While it is held, nothing later of its message group may be delivered.
	for round := 0; round < 2; round++ {
		for _, m := range receive(c, 32, invisible) {
			if valid(m, hg) {
				ack(c, m)
				next[mgroupOf(m)]++
			}
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	ack(c, held)
	next[hg]++
	total := func() int {
		s := 0
		for _, v := range next {
			s += v
		}
		return s
	}
	for end := time.Now().Add(90 * time.Second); total() < len(groups)*perGroup && time.Now().Before(end) && len(problems) == 0; {
		for _, m := range receive(c, 32, invisible) {
			if valid(m, "") {
				ack(c, m)
				next[mgroupOf(m)]++
			}
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	for g, v := range next {
		check(v == perGroup, "incomplete: %s at %d of %d (%v)", g, v, perGroup, next)
	}
}

func deadLetter() {
	t := topic("dlq")
	body := []byte("dead letter " + run)
	id := send(producer, message(t, body, "dlq", []string{"dk-" + run}, map[string]string{"origin": "go"}, "")).MessageID
	retryInv := time.Duration(retrySecs) * time.Second
	c := mustSimple("dlq", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	var attempts []int32
	for end := time.Now().Add(time.Duration(dlqAttempts*retrySecs+60) * time.Second); len(attempts) < dlqAttempts && time.Now().Before(end); {
		for _, m := range receive(c, 1, retryInv) {
			check(m.GetMessageId() == id, "unexpected message %s", m.GetMessageId())
			attempts = append(attempts, m.GetDeliveryAttempt())
		}
	}
	ok := len(attempts) == dlqAttempts
	for i := 0; ok && i < dlqAttempts; i++ {
		ok = attempts[i] == int32(i+1)
	}
	check(ok, "delivery attempts %v", attempts)
	dlqTopic := "%DLQ%" + group("dlq")
	var found *rmq.MessageView
	var reader rmq.SimpleConsumer
	defer func() {
		if reader != nil {
			reader.GracefulStop()
		}
	}()
	for end := time.Now().Add(time.Duration(retrySecs+60) * time.Second); found == nil && time.Now().Before(end); {
		// The source group keeps polling: it must not get the message a further time.
		again := receive(c, 1, retryInv)
		check(len(again) == 0, "delivered again after %d attempts", dlqAttempts)
		if reader == nil {
			r, err := simple("dlqreader", dlqTopic, rmq.SUB_ALL)
			if err != nil { // the DLQ topic may not exist before the first dead letter
				time.Sleep(time.Second)
				continue
			}
			reader = r
		}
		got, err := reader.Receive(context.Background(), 32, invisible)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for _, m := range got {
			ack(reader, m)
			if m.GetMessageId() == id || bytes.Equal(m.GetBody(), body) {
				found = m
			}
		}
	}
	check(found != nil, "not found in %s", dlqTopic)
	check(found.GetMessageId() == id, "DLQ copy has message id %s, sent %s", found.GetMessageId(), id)
	check(bytes.Equal(found.GetBody(), body) && tagOf(found) == "dlq" && strings.Contains(","+sortedKeys(found.GetKeys())+",", ",dk-"+run+","),
		"DLQ copy differs")
	check(found.GetProperties()["origin"] == "go", "DLQ copy lost user properties: %v", found.GetProperties())
}

func pushConsumer(kind, t string, threads int32, listener func(*rmq.MessageView) rmq.ConsumerResult) rmq.PushConsumer {
	c := must(rmq.NewPushConsumer(config(group(kind)),
		rmq.WithPushSubscriptionExpressions(map[string]*rmq.FilterExpression{t: rmq.SUB_ALL}),
		rmq.WithPushConsumptionThreadCount(threads),
		rmq.WithPushMessageListener(&rmq.FuncMessageListener{Consume: listener})))
	if err := c.Start(); err != nil {
		panic(failed{"push consumer start: " + err.Error()})
	}
	return c
}

func pushConsume() {
	t := topic("push")
	n := 20
	var mu sync.Mutex
	expected := map[string][]byte{}
	seen := map[string][][]byte{}
	for i := 0; i < n/2; i++ {
		b := bodyFor(i, "push")
		expected[send(producer, message(t, b, "push", nil, nil, "")).MessageID] = b
	}
	c := pushConsumer("push", t, 4, func(m *rmq.MessageView) rmq.ConsumerResult {
		mu.Lock()
		defer mu.Unlock()
		seen[m.GetMessageId()] = append(seen[m.GetMessageId()], append([]byte(nil), m.GetBody()...))
		return rmq.SUCCESS
	})
	defer c.GracefulStop()
	time.Sleep(time.Second)
	for i := n / 2; i < n; i++ {
		b := bodyFor(i, "push")
		id := send(producer, message(t, b, "push", nil, nil, "")).MessageID
		mu.Lock()
		expected[id] = b
		mu.Unlock()
	}
	all := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range expected {
			if _, ok := seen[id]; !ok {
				return false
			}
		}
		return true
	}
	for end := time.Now().Add(60 * time.Second); !all() && time.Now().Before(end); {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // give duplicates a chance to show up
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id := range expected {
		if _, ok := seen[id]; !ok {
			missing++
		}
	}
	check(missing == 0, "push consumer got %d of %d messages", n-missing, n)
	var dups, extra []string
	for id, v := range seen {
		if len(v) > 1 {
			dups = append(dups, fmt.Sprintf("%s x%d", id, len(v)))
		}
		if _, ok := expected[id]; !ok {
			extra = append(extra, id)
		}
	}
	check(len(dups) == 0, "consumed more than once: %v", dups)
	check(len(extra) == 0, "unexpected messages %v", extra)
	for id, b := range expected {
		check(bytes.Equal(seen[id][0], b), "body differs for %s", id)
	}
}

func pushRetry() {
	t := topic("pushretry")
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, send(producer, message(t, []byte(fmt.Sprintf("nack %s %d", run, i)), "nack", nil, nil, "")).MessageID)
	}
	var mu sync.Mutex
	attempts := map[string][]int32{}
	c := pushConsumer("pushretry", t, 2, func(m *rmq.MessageView) rmq.ConsumerResult {
		mu.Lock()
		defer mu.Unlock()
		attempts[m.GetMessageId()] = append(attempts[m.GetMessageId()], m.GetDeliveryAttempt())
		if len(attempts[m.GetMessageId()]) == 1 {
			return rmq.FAILURE
		}
		return rmq.SUCCESS
	})
	defer c.GracefulStop()
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if len(attempts[id]) < 2 {
				return false
			}
		}
		return true
	}
	for end := time.Now().Add(60 * time.Second); !done() && time.Now().Before(end); {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	bad := map[string][]int32{}
	for _, id := range ids {
		a := attempts[id]
		if len(a) != 2 || a[0] != 1 || a[1] != 2 {
			bad[id] = a
		}
	}
	check(len(bad) == 0, "delivery attempts per message (want [1 2]): %v", bad)
}

func unknownTopic() {
	_, err := producer.Send(context.Background(), message(topic("missing"), []byte("nobody home"), "x", nil, nil, ""))
	check(err != nil, "send to an unknown topic succeeded")
	var rpc *rmq.ErrRpcStatus
	check(errors.As(err, &rpc) && rpc.GetCode() == topicNotFound || strings.Contains(err.Error(), strconv.Itoa(topicNotFound)),
		"expected TOPIC_NOT_FOUND (%d), got %T: %v", topicNotFound, err, err)
}

func oversizedBody() {
	big := bytes.Repeat([]byte("x"), maxBody+1)
	_, err := producer.Send(context.Background(), message(topic("normal"), big, "big", nil, nil, ""))
	check(err != nil, "a %d-byte body was accepted", len(big))
	m := strings.ToLower(err.Error())
	check(strings.Contains(m, "exceed") || strings.Contains(m, "too large") || strings.Contains(m, "41301") || strings.Contains(m, "41300"),
		"unexpected error for an oversized body: %v", err)
	send(producer, message(topic("normal"), []byte("small after big"), "small", nil, nil, ""))
}

func quantiles(v []int64) string {
	c := append([]int64(nil), v...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return fmt.Sprintf("min %d p50 %d max %d", c[0], c[len(c)/2], c[len(c)-1])
}

func delayMessage(t, body, tag string, atMs int64, props map[string]string) *rmq.Message {
	m := message(t, []byte(body), tag, nil, props, "")
	m.SetDelayTimestamp(time.UnixMilli(atMs))
	return m
}

func delay() {
	t := topic("delay")
	n := 10
	c := mustSimple("delay", t, rmq.NewFilterExpression("delay"))
	defer c.GracefulStop()
	due := map[string]int64{}
	base := nowMs()
	var last int64
	for i := 0; i < n; i++ {
		at := base + 1000 + int64(i*337)%3000
		if at > last {
			last = at
		}
		r := send(producer, delayMessage(t, fmt.Sprintf("delay %s %d", run, i), "delay", at, map[string]string{"seq": strconv.Itoa(i)}))
		due[r.MessageID] = at
	}
	check(len(due) == n, "duplicate message ids in send receipts")
	late := map[string]int64{}
	var problems []string
	for nowMs() < last+30_000 && len(late) < n {
		got := receive(c, 32, invisible)
		now := nowMs()
		for _, m := range got {
			ack(c, m)
			id := m.GetMessageId()
			at, ok := due[id]
			switch {
			case !ok:
				problems = append(problems, "unexpected message "+id)
			case late[id] != 0:
				problems = append(problems, id+" delivered twice")
			default:
				l := now - at
				if l == 0 {
					l = 1 // keep 0 free as "not seen"; 1 ms does not change the verdict
				}
				late[id] = l
				if l < -earlySlackMs {
					problems = append(problems, fmt.Sprintf("seq %s delivered %d ms before its delivery timestamp", m.GetProperties()["seq"], -l))
				}
			}
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	check(len(late) == n, "%d of %d DELAY messages never delivered (30 s past the last due time)", n-len(late), n)
	var v []int64
	for _, l := range late {
		v = append(v, l)
	}
	passDetail = fmt.Sprintf("lateness ms %s (n=%d)", quantiles(v), n)
}

func recall() {
	t := topic("delay")
	c := mustSimple("recall", t, rmq.NewFilterExpression("recall"))
	defer c.GracefulStop()
	at := nowMs() + 3000
	r1 := send(producer, delayMessage(t, "recall me "+run, "recall", at, nil))
	check(r1.RecallHandle != "", "the send receipt of a DELAY message has no recall handle")
	recalled := must(producer.Recall(context.Background(), t, r1.RecallHandle))
	check(recalled == "" || recalled == r1.MessageID, "RecallMessage answered message id %s, recalled %s", recalled, r1.MessageID)
	id2 := send(producer, delayMessage(t, "keep me "+run, "recall", at, nil)).MessageID
	got := map[string]int64{}
	for nowMs() < at+30_000 {
		if _, ok := got[id2]; ok && nowMs() >= at+2000 {
			break
		}
		batch := receive(c, 32, invisible)
		now := nowMs()
		for _, m := range batch {
			ack(c, m)
			if _, ok := got[m.GetMessageId()]; !ok {
				got[m.GetMessageId()] = now
			}
		}
	}
	_, bad := got[r1.MessageID]
	check(!bad, "the recalled message was delivered")
	_, ok := got[id2]
	check(ok, "the message that was not recalled never arrived (30 s past its due time)")
	check(len(got) == 1, "unexpected messages %v", got)
	passDetail = fmt.Sprintf("recalled one absent until %.1f s past due; kept one %d ms late", float64(nowMs()-at)/1000, got[id2]-at)
}

func transaction() {
	t := topic("tx")
	var mu sync.Mutex
	roles := map[string]string{}
	type call struct {
		id, role string
		at       int64
	}
	var calls []call
	asked := func(id string) bool {
		for _, c := range calls {
			if c.id == id {
				return true
			}
		}
		return false
	}
	txp := must(rmq.NewProducer(config(""), rmq.WithTopics(t), rmq.WithTransactionChecker(&rmq.TransactionChecker{
		Check: func(m *rmq.MessageView) rmq.TransactionResolution {
			mu.Lock()
			defer mu.Unlock()
			id := m.GetMessageId()
			role := roles[id]
			first := !asked(id)
			calls = append(calls, call{id, role, nowMs()})
			if role == "unresolved" && first {
				return rmq.COMMIT
			}
			return rmq.UNKNOWN
		},
	})))
	if err := txp.Start(); err != nil {
		panic(failed{"transactional producer start: " + err.Error()})
	}
	defer txp.GracefulStop()
	c := mustSimple("tx", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	idOf := map[string]string{}
	sentAt := map[string]int64{}
	txs := map[string]rmq.Transaction{}
	for _, role := range []string{"commit", "rollback", "unresolved"} {
		tx := txp.BeginTransaction()
		r := must(txp.SendWithTransaction(context.Background(),
			message(t, []byte("tx "+run+" "+role), "tx", nil, map[string]string{"role": role}, ""), tx))
		check(len(r) == 1, "transactional send answered %d receipts", len(r))
		mu.Lock()
		roles[r[0].MessageID] = role
		mu.Unlock()
		idOf[role] = r[0].MessageID
		sentAt[role] = nowMs()
		txs[role] = tx
	}
	seen := map[string]int{}
	var problems []string
	take := func(m *rmq.MessageView, committed bool) {
		id := m.GetMessageId()
		seen[id]++
		ack(c, m)
		mu.Lock()
		role, wasAsked := roles[id], asked(id)
		mu.Unlock()
		switch {
		case role == "":
			problems = append(problems, "unexpected message "+id)
		case role == "rollback":
			problems = append(problems, "the rolled-back half message was delivered")
		case role == "commit" && !committed:
			problems = append(problems, "the half message was delivered before commit()")
		case role == "unresolved" && !wasAsked:
			problems = append(problems, "the unresolved half message was delivered before the checker was asked")
		}
	}
	// Before anything is committed: at least one full receive and 3 s, nothing but a checked-back message.
	t0 := time.Now()
	for rounds := 0; rounds == 0 || time.Since(t0) < 3*time.Second; rounds++ {
		for _, m := range receive(c, 32, invisible) {
			take(m, false)
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	check(txs["commit"].Commit() == nil, "commit() failed")
	check(txs["rollback"].RollBack() == nil, "rollback() failed")
	for end := time.Now().Add(txWindow); time.Now().Before(end); {
		for _, m := range receive(c, 32, invisible) {
			take(m, true)
		}
	}
	check(len(problems) == 0, "%s", first10(problems))
	mu.Lock()
	var askedAt int64 = -1
	askedTimes := 0
	others := map[string]bool{}
	for _, cl := range calls {
		if cl.role == "unresolved" {
			if askedAt < 0 || cl.at < askedAt {
				askedAt = cl.at
			}
			askedTimes++
		} else {
			others[cl.role] = true
		}
	}
	ncalls := len(calls)
	mu.Unlock()
	check(askedAt >= 0, "the checker was never asked about the unresolved half message (calls: %d)", ncalls)
	counts := fmt.Sprintf("commit=%d rollback=%d unresolved=%d", seen[idOf["commit"]], seen[idOf["rollback"]], seen[idOf["unresolved"]])
	check(counts == "commit=1 rollback=0 unresolved=1", "deliveries per half message: %s", counts)
	passDetail = fmt.Sprintf("check-back after %d ms; asked %dx about the unresolved one", askedAt-sentAt["unresolved"], askedTimes)
	if len(others) > 0 {
		var o []string
		for r := range others {
			o = append(o, r)
		}
		sort.Strings(o)
		passDetail += ", also about " + strings.Join(o, ",") + " (answered unknown)"
	}
}

func priority() {
	if reason := os.Getenv("FERROMQ_SKIP_PRIORITY"); reason != "" {
		panic(skip{reason})
	}
	t := topic("priority")
	prios := []int32{1, 5, 3, 5, 9, 1}
	label := map[string]string{}
	type sent struct {
		id   string
		prio int32
	}
	var order0 []sent
	for i, p := range prios {
		m := message(t, []byte(fmt.Sprintf("prio %s %d", run, i)), "prio", nil, map[string]string{"seq": strconv.Itoa(i)}, "")
		if err := m.SetPriority(p); err != nil {
			panic(failed{"SetPriority: " + err.Error()})
		}
		id := send(producer, m).MessageID
		label[id] = fmt.Sprintf("p%d#%d", p, i)
		order0 = append(order0, sent{id, p})
	}
	sort.SliceStable(order0, func(i, j int) bool { return order0[i].prio > order0[j].prio })
	c := mustSimple("priority", t, rmq.SUB_ALL)
	defer c.GracefulStop()
	var order []string
	for end := time.Now().Add(60 * time.Second); len(order) < len(prios) && time.Now().Before(end); {
		for _, m := range receive(c, 32, invisible) {
			order = append(order, m.GetMessageId())
			ack(c, m)
		}
	}
	for _, m := range receive(c, 32, invisible) { // nothing more
		order = append(order, m.GetMessageId())
		ack(c, m)
	}
	var shown, wanted []string
	for _, id := range order {
		if l, ok := label[id]; ok {
			shown = append(shown, l)
		} else {
			shown = append(shown, id)
		}
	}
	for _, s := range order0 {
		wanted = append(wanted, label[s.id])
	}
	check(strings.Join(shown, " ") == strings.Join(wanted, " "), "delivered %s; want %s", strings.Join(shown, " "), strings.Join(wanted, " "))
	passDetail = "order " + strings.Join(shown, " ")
}

// ---- runner ----

var spaces = regexp.MustCompile(`\s+`)

func report(name, verdict, detail string) {
	d := strings.TrimSpace(spaces.ReplaceAllString(detail, " "))
	if len(d) > 300 {
		d = d[:300]
	}
	line := strings.TrimSpace("go " + name + " " + verdict + " " + d)
	fmt.Println("SCENARIO " + line)
	switch verdict {
	case "FAIL":
		failures++
	case "SKIP":
		skipped++
	}
	if path := os.Getenv("FERROMQ_RESULTS_FILE"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(line + "\n")
			_ = f.Close()
		}
	}
}

func runScenario(name string, f func()) {
	t0 := time.Now()
	passDetail = ""
	func() {
		defer func() {
			switch r := recover().(type) {
			case nil:
				report(name, "PASS", passDetail)
			case failed:
				report(name, "FAIL", r.msg)
			case skip:
				report(name, "SKIP", r.msg)
			default:
				report(name, "FAIL", fmt.Sprintf("panic: %v", r))
			}
		}()
		f()
	}()
	fmt.Printf("  %s took %.1f s\n", name, time.Since(t0).Seconds())
}

func main() {
	if os.Getenv("FERROMQ_MODE") == "auth" {
		os.Exit(runAuth())
	}
	fmt.Printf("go client scenarios against %s (run %s, TLS %v: the client's default)\n", endpoint, run, rmq.EnableSsl)
	p, err := rmq.NewProducer(config(""), rmq.WithTopics(topic("normal"), topic("filter"), topic("retry"), topic("push"),
		topic("pushretry"), topic("fifo"), topic("dlq"), topic("delay"), topic("priority")))
	if err == nil {
		err = p.Start()
	}
	if err != nil {
		for _, s := range scenarios {
			report(s, "FAIL", "producer start failed: "+err.Error())
		}
		os.Exit(1)
	}
	producer = p
	all := []func(){sendReceiveAck, tagFilter, sqlFilter, redelivery, fifoOrder, deadLetter, pushConsume, pushRetry,
		unknownTopic, oversizedBody, delay, recall, transaction, priority}
	for i, f := range all {
		runScenario(scenarios[i], f)
	}
	if err := producer.GracefulStop(); err != nil {
		fmt.Println("producer stop failed:", err)
	}
	fmt.Printf("go: %d passed, %d failed, %d skipped\n", len(scenarios)-failures-skipped, failures, skipped)
	if failures > 0 {
		os.Exit(1)
	}
}
