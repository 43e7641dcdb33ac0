// Remoting-protocol scenarios driven by github.com/apache/rocketmq-client-go/v2 (producer and push
// consumer). Run by tests/clients/remoting/run.sh; prints "SCENARIO go <name> PASS|FAIL <detail>"
// and appends the line without the prefix to FERROMQ_RESULTS_FILE. Exit 1 if a scenario failed.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

var failures int

func env(k, dflt string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return dflt
}

func report(name, verdict, detail string) {
	line := fmt.Sprintf("go %s %s %s", name, verdict, strings.ReplaceAll(detail, "\n", " "))
	fmt.Println("SCENARIO " + line)
	if verdict == "FAIL" {
		failures++
	}
	if path := os.Getenv("FERROMQ_RESULTS_FILE"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

type sentMsg struct {
	body []byte
	tag  string
	key  string
	prop string
}

func main() {
	rlog.SetLogLevel("warn")
	ns := []string{env("FERROMQ_NAMESRV", "127.0.0.1:9876")}
	topic := env("FERROMQ_TOPIC", "go_topic")
	group := env("FERROMQ_GROUP", "go_group")
	run := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000)

	p, err := rocketmq.NewProducer(
		producer.WithNsResolver(primitive.NewPassthroughResolver(ns)),
		producer.WithGroupName(group+"_p"),
		producer.WithRetry(2),
		producer.WithSendMsgTimeout(10*time.Second),
	)
	if err == nil {
		err = p.Start()
	}
	if err != nil {
		report("producer_sync", "FAIL", "producer start: "+err.Error())
		report("producer_async", "FAIL", "producer start: "+err.Error())
		report("push_consume", "FAIL", "producer start: "+err.Error())
		os.Exit(1)
	}
	sent := map[string]sentMsg{}
	var mu sync.Mutex
	build := func(mode string, i int) (*primitive.Message, sentMsg) {
		body := []byte(fmt.Sprintf("%s-%d-%s-%s", mode, i, run, strings.Repeat("x", i*300)))
		s := sentMsg{body: body, tag: mode, key: fmt.Sprintf("%s-key-%d-%s", mode, i, run), prop: fmt.Sprintf("ünï-%d", i)}
		m := primitive.NewMessage(topic, body)
		m.WithTag(s.tag)
		m.WithKeys([]string{s.key})
		m.WithProperty("uni", s.prop)
		return m, s
	}

	var syncErr error
	for i := 0; i < 10 && syncErr == nil; i++ {
		m, s := build("GOSYNC", i)
		res, err := p.SendSync(context.Background(), m)
		switch {
		case err != nil:
			syncErr = err
		case res.Status != primitive.SendOK:
			syncErr = fmt.Errorf("send status %v", res.Status)
		default:
			sent[res.MsgID] = s
			if i == 0 {
				fmt.Printf("SENT_OFFSET_ID %s %s\n", topic, res.OffsetMsgID)
			}
		}
	}
	if syncErr != nil {
		report("producer_sync", "FAIL", syncErr.Error())
	} else {
		report("producer_sync", "PASS", "10 sent with SendSync")
	}

	var wg sync.WaitGroup
	var asyncErrs []string
	for i := 0; i < 10; i++ {
		m, s := build("GOASYNC", i)
		wg.Add(1)
		err := p.SendAsync(context.Background(), func(ctx context.Context, res *primitive.SendResult, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				asyncErrs = append(asyncErrs, err.Error())
				return
			}
			sent[res.MsgID] = s
		}, m)
		if err != nil {
			wg.Done()
			asyncErrs = append(asyncErrs, err.Error())
		}
	}
	waitTimeout(&wg, 30*time.Second)
	if len(asyncErrs) > 0 {
		report("producer_async", "FAIL", strings.Join(asyncErrs, "; "))
	} else {
		report("producer_async", "PASS", "10 sent with SendAsync")
	}
	_ = p.Shutdown()

	got := map[string]*primitive.MessageExt{}
	dups := 0
	c, err := rocketmq.NewPushConsumer(
		consumer.WithNsResolver(primitive.NewPassthroughResolver(ns)),
		consumer.WithGroupName(group),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	)
	if err == nil {
		err = c.Subscribe(topic, consumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				if _, ok := got[m.MsgId]; ok {
					dups++
				}
				got[m.MsgId] = m
			}
			return consumer.ConsumeSuccess, nil
		})
	}
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		report("push_consume", "FAIL", "consumer start: "+err.Error())
		os.Exit(1)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(sent) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	_ = c.Shutdown()

	mu.Lock()
	defer mu.Unlock()
	var problems []string
	for id, s := range sent {
		m, ok := got[id]
		if !ok {
			problems = append(problems, "never delivered: "+id)
			continue
		}
		if !bytes.Equal(m.Body, s.body) || m.GetTags() != s.tag || m.GetKeys() != s.key || m.GetProperty("uni") != s.prop {
			problems = append(problems, fmt.Sprintf("altered: %s (tag %q keys %q uni %q)", id, m.GetTags(), m.GetKeys(), m.GetProperty("uni")))
		}
	}
	if dups > 0 {
		problems = append(problems, fmt.Sprintf("%d duplicate deliveries", dups))
	}
	if len(sent) < 20 {
		problems = append(problems, fmt.Sprintf("only %d of 20 sends succeeded", len(sent)))
	}
	if len(problems) > 0 {
		report("push_consume", "FAIL", strings.Join(problems, "; "))
	} else {
		report("push_consume", "PASS", fmt.Sprintf("%d messages delivered once, body/tag/keys/properties intact", len(sent)))
	}
	if failures > 0 {
		os.Exit(1)
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
