// Authentication and authorization scenarios (FERROMQ_MODE=auth, run by tests/suites/35-auth.sh against
// `ferromq standalone --auth`): the official Go client with right, wrong and absent credentials, and against
// a topic or group its user's policy does not cover. Env: FERROMQ_ENDPOINT, FERROMQ_AUTH_AK / FERROMQ_AUTH_SK
// (a normal user), FERROMQ_AUTH_TOPIC_{OK,DENIED,OTHER}, FERROMQ_AUTH_GROUP_{OK,OTHER}, FERROMQ_RESULTS_FILE.
//
// The Go client signs each call with `credentials.SessionCredentials` (`Credential=<ak>//Rocketmq`, a
// lower-case hex HMAC-SHA1 of x-mq-date-time); nil credentials send no authorization header at all.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	"github.com/apache/rocketmq-clients/golang/v5/credentials"
	v2 "github.com/apache/rocketmq-clients/golang/v5/protocol/v2"
)

const (
	unauthorized = int32(v2.Code_UNAUTHORIZED) // 40100
	forbidden    = int32(v2.Code_FORBIDDEN)    // 40300
	authSentOK   = 3
)

var authScenarios = []string{"auth_right_credentials", "auth_wrong_secret", "auth_unknown_user", "auth_no_credentials",
	"auth_forbidden_topic", "auth_deny_beats_allow", "auth_forbidden_group"}

func authTopic(k string) string { return os.Getenv("FERROMQ_AUTH_TOPIC_" + k) }
func authGroup(k string) string { return os.Getenv("FERROMQ_AUTH_GROUP_" + k) }

// authConfig: creds nil means a client without credentials (it signs nothing).
func authConfig(g string, creds *credentials.SessionCredentials) *rmq.Config {
	return &rmq.Config{Endpoint: endpoint, ConsumerGroup: g, Credentials: creds}
}

// codeName matches the text the client's ErrRpcStatus prints (`CODE: UNAUTHORIZED, MESSAGE: ...`).
var codeName = regexp.MustCompile(`CODE: ([A-Z_]+)`)

// serverCode is the RocketMQ status code a refusal carries. Calls after start (Send, Receive) return the
// client's *ErrRpcStatus; a refused route lookup during Start comes back formatted into a plain error
// (the client wraps it with %v), so there the code is read back from the name the client printed.
func serverCode(err error) (int32, bool) {
	var rpc *rmq.ErrRpcStatus
	if errors.As(err, &rpc) {
		return rpc.GetCode(), true
	}
	if m := codeName.FindStringSubmatch(err.Error()); m != nil {
		if c, ok := v2.Code_value[m[1]]; ok {
			return c, true
		}
	}
	return 0, false
}

// expectRefused: the call must have failed with the RocketMQ code want.
func expectRefused(want int32, err error) {
	check(err != nil, "not refused")
	got, ok := serverCode(err)
	check(ok, "refused without a RocketMQ code (want %d): %T: %v", want, err, err)
	check(got == want, "refused with %d (want %d): %v", got, want, err)
	passDetail = fmt.Sprintf("refused with %d", got)
}

// sendWith starts a producer for topic and sends one message that must not be stored.
//
// A send refused by SendMessage (not already by QueryRoute at start) is attempted again: the client's
// Send retries up to the max_attempts of the server's Settings backoff policy (3 from ferromq; the
// client's own WithMaxAttempts is overridden by it), and each resend signs again the context the refused
// attempt was signed in, so attempt 2 carries two authorization and two x-mq-date-time headers. The code
// the caller sees is the last attempt's: it must still be the refusal of the call, not of the headers.
func sendWith(creds *credentials.SessionCredentials, t string) error {
	p, err := rmq.NewProducer(authConfig("", creds), rmq.WithTopics(t))
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	defer func() { _ = p.GracefulStop() }()
	r, err := p.Send(context.Background(), message(t, []byte("should not be stored"), "auth", nil, nil, ""))
	if err == nil {
		return fmt.Errorf("accepted: stored as %v", r)
	}
	return err
}

// authRightCredentials sends authSentOK messages to the ok topic and receives and acks them with the ok group.
func authRightCredentials(creds *credentials.SessionCredentials) func() {
	return func() {
		t, g := authTopic("OK"), authGroup("OK")
		p := must(rmq.NewProducer(authConfig("", creds), rmq.WithTopics(t)))
		if err := p.Start(); err != nil {
			panic(failed{"producer start: " + err.Error()})
		}
		ids := map[string]bool{}
		for i := 0; i < authSentOK; i++ {
			ids[send(p, message(t, []byte(fmt.Sprintf("auth %d", i)), "auth", nil, nil, "")).MessageID] = true
		}
		_ = p.GracefulStop()
		c := must(rmq.NewSimpleConsumer(authConfig(g, creds), rmq.WithSimpleAwaitDuration(await),
			rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{t: rmq.SUB_ALL})))
		if err := c.Start(); err != nil {
			panic(failed{"consumer start: " + err.Error()})
		}
		defer func() { _ = c.GracefulStop() }()
		got := map[string]bool{}
		for end := time.Now().Add(30 * time.Second); len(got) < len(ids) && time.Now().Before(end); {
			for _, m := range receive(c, 16, invisible) {
				ack(c, m)
				if ids[m.GetMessageId()] {
					got[m.GetMessageId()] = true
				}
			}
		}
		check(len(got) == len(ids), "sent %d, received and acked %d", len(ids), len(got))
		passDetail = fmt.Sprintf("sent %d, received and acked %d", len(ids), len(got))
	}
}

func authForbiddenGroup(creds *credentials.SessionCredentials) func() {
	return func() {
		c, err := rmq.NewSimpleConsumer(authConfig(authGroup("OTHER"), creds), rmq.WithSimpleAwaitDuration(await),
			rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{authTopic("OK"): rmq.SUB_ALL}))
		if err == nil {
			err = c.Start()
			if err == nil {
				defer func() { _ = c.GracefulStop() }()
				var l []*rmq.MessageView
				l, err = c.Receive(context.Background(), 16, invisible)
				if err == nil {
					err = fmt.Errorf("accepted: received %d messages", len(l))
				}
			}
		}
		expectRefused(forbidden, err)
	}
}

func runAuth() int {
	ak, sk := os.Getenv("FERROMQ_AUTH_AK"), os.Getenv("FERROMQ_AUTH_SK")
	fmt.Printf("go client auth scenarios against %s as %s (TLS %v)\n", endpoint, ak, rmq.EnableSsl)
	creds := &credentials.SessionCredentials{AccessKey: ak, AccessSecret: sk}
	wrong := &credentials.SessionCredentials{AccessKey: ak, AccessSecret: sk + "x"}
	nobody := &credentials.SessionCredentials{AccessKey: "nobody", AccessSecret: sk}
	all := []func(){
		authRightCredentials(creds),
		func() { expectRefused(unauthorized, sendWith(wrong, authTopic("OK"))) },
		func() { expectRefused(unauthorized, sendWith(nobody, authTopic("OK"))) },
		func() { expectRefused(unauthorized, sendWith(nil, authTopic("OK"))) },
		func() { expectRefused(forbidden, sendWith(creds, authTopic("OTHER"))) },
		func() { expectRefused(forbidden, sendWith(creds, authTopic("DENIED"))) },
		authForbiddenGroup(creds),
	}
	for i, f := range all {
		runScenario(authScenarios[i], f)
	}
	fmt.Printf("go auth: %d passed, %d failed\n", len(authScenarios)-failures, failures)
	if failures > 0 {
		return 1
	}
	return 0
}
