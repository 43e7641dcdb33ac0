package io.ferromq.tests.remoting;

import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.remoting.RPCHook;

/**
 * Authentication and authorization on FerroMQ's remoting port with the classic 4.x client's own
 * ACL hook (org.apache.rocketmq:rocketmq-acl 4.9.8, {@code AclClientRPCHook}), run by
 * tests/suites/35-auth.sh against {@code ferromq standalone --auth --remoting-addr ...}.
 *
 * <p>The user's policy (set by the suite): publish and subscribe on topic:authok-*, subscribe on
 * group:authg-*, a deny of publish on topic:authok-denied-*. Each scenario prints
 * {@code SCENARIO remoting <name> PASS|FAIL <detail>}; the suite then checks that refused sends
 * stored nothing.
 */
public final class Acl4x {
    private static final String CLIENT = "remoting";
    private static final String NAMESRV = Results.env("FERROMQ_NAMESRV", "127.0.0.1:9876");
    private static final String AK = Results.env("FERROMQ_AUTH_AK", "app");
    private static final String SK = Results.env("FERROMQ_AUTH_SK", "");
    private static final String TOPIC_OK = Results.env("FERROMQ_AUTH_TOPIC_OK", "authok-remoting");
    private static final String TOPIC_DENIED =
        Results.env("FERROMQ_AUTH_TOPIC_DENIED", "authok-denied-remoting");
    private static final String TOPIC_OTHER = Results.env("FERROMQ_AUTH_TOPIC_OTHER", "authother-remoting");
    private static final String GROUP_OK = Results.env("FERROMQ_AUTH_GROUP_OK", "authg-remoting");
    private static final long WAIT_MS = 60_000;

    private Acl4x() {
    }

    private static RPCHook hook(String ak, String sk) {
        return new AclClientRPCHook(new SessionCredentials(ak, sk));
    }

    private static DefaultMQProducer producer(String name, RPCHook hook) throws Exception {
        DefaultMQProducer p = hook == null ? new DefaultMQProducer("authp_" + name)
            : new DefaultMQProducer("authp_" + name, hook);
        p.setNamesrvAddr(NAMESRV);
        p.setInstanceName("acl_" + name);
        p.setSendMsgTimeout(5_000);
        p.setRetryTimesWhenSendFailed(0);
        p.start();
        return p;
    }

    private static Message message(String topic, String body) {
        return new Message(topic, "acl", body.getBytes(StandardCharsets.UTF_8));
    }

    /** Sends once and says what the client raised, if anything. */
    private static String trySend(DefaultMQProducer p, String topic) {
        try {
            SendResult r = p.send(message(topic, "refused-" + System.nanoTime()));
            return "accepted: " + r.getSendStatus();
        } catch (Exception e) {
            return e.toString();
        }
    }

    private static void refused(String scenario, String outcome) {
        boolean ok = !outcome.startsWith("accepted");
        Results.report(CLIENT, scenario, ok ? "PASS" : "FAIL", outcome.length() > 300 ? outcome.substring(0, 300) : outcome);
    }

    private static void rightCredentials() throws Exception {
        Set<String> got = ConcurrentHashMap.newKeySet();
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(GROUP_OK, hook(AK, SK),
            new org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely());
        c.setNamesrvAddr(NAMESRV);
        c.setInstanceName("acl_consumer");
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(TOPIC_OK, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                got.add(new String(m.getBody(), StandardCharsets.UTF_8));
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        DefaultMQProducer p = producer("ok", hook(AK, SK));
        try {
            c.start();
            for (int i = 0; i < 3; i++) {
                SendResult r = p.send(message(TOPIC_OK, "acl-ok-" + i));
                Results.check(r.getSendStatus() == SendStatus.SEND_OK, "send " + i + ": " + r.getSendStatus());
            }
            long end = System.currentTimeMillis() + WAIT_MS;
            while (got.size() < 3 && System.currentTimeMillis() < end) {
                Thread.sleep(100);
            }
            Results.check(got.size() == 3, "received " + got + " of 3");
            Results.report(CLIENT, "auth_right_credentials", "PASS", "3 sent, 3 received through the ACL hook");
        } catch (Exception e) {
            Results.report(CLIENT, "auth_right_credentials", "FAIL", e.toString());
        } finally {
            p.shutdown();
            c.shutdown();
        }
    }

    private static void withProducer(String scenario, RPCHook hook, String topic) {
        DefaultMQProducer p = null;
        try {
            p = producer(scenario, hook);
            refused(scenario, trySend(p, topic));
        } catch (Exception e) {
            Results.report(CLIENT, scenario, "FAIL", "producer did not start: " + e);
        } finally {
            if (p != null) {
                p.shutdown();
            }
        }
    }

    public static void main(String[] args) throws Exception {
        rightCredentials();
        withProducer("auth_wrong_secret", hook(AK, SK + "-wrong"), TOPIC_OK);
        withProducer("auth_unknown_user", hook("nobody-" + System.nanoTime() % 100000, SK), TOPIC_OK);
        withProducer("auth_no_credentials", null, TOPIC_OK);
        withProducer("auth_forbidden_topic", hook(AK, SK), TOPIC_OTHER);
        withProducer("auth_deny_beats_allow", hook(AK, SK), TOPIC_DENIED);
        System.exit(Results.exitCode());
    }
}
