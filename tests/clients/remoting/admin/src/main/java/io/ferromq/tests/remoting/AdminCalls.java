package io.ferromq.tests.remoting;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;
import org.apache.rocketmq.remoting.protocol.admin.ConsumeStats;
import org.apache.rocketmq.remoting.protocol.admin.TopicStatsTable;
import org.apache.rocketmq.remoting.protocol.body.ClusterInfo;
import org.apache.rocketmq.remoting.protocol.body.ConsumerConnection;
import org.apache.rocketmq.remoting.protocol.body.ConsumerRunningInfo;
import org.apache.rocketmq.remoting.protocol.body.KVTable;
import org.apache.rocketmq.remoting.protocol.body.ProducerConnection;
import org.apache.rocketmq.remoting.protocol.body.SubscriptionGroupWrapper;
import org.apache.rocketmq.remoting.protocol.body.TopicConfigSerializeWrapper;
import org.apache.rocketmq.remoting.protocol.body.TopicList;
import org.apache.rocketmq.remoting.protocol.route.TopicRouteData;
import org.apache.rocketmq.remoting.protocol.subscription.SubscriptionGroupConfig;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

import io.ferromq.tests.remoting.Results.Failed;

/**
 * The DefaultMQAdminExt calls rocketmq-dashboard and rocketmq-exporter make (rocketmq-tools).
 *
 * <p>Starts a producer and a push consumer of its own (so connection lists and consume stats have
 * something to show), then makes each call and checks the answer. One line per call:
 * {@code SCENARIO admin <call> PASS|FAIL <detail>}, appended to FERROMQ_RESULTS_FILE.
 */
public final class AdminCalls {
    private static final String NAMESRV = Results.env("FERROMQ_NAMESRV", "127.0.0.1:9876");
    private static final String CLUSTER = Results.env("FERROMQ_CLUSTER", "DefaultCluster");
    private static final String PREFIX = Results.env("FERROMQ_TOPIC_PREFIX", "adm");
    private static final String TOPIC = Results.env("FERROMQ_TOPIC", PREFIX + "_basic");
    private static final String RUN = UUID.randomUUID().toString().substring(0, 8);


    interface Call {
        String run() throws Exception;
    }


    private static void check(boolean ok, String what) {
        Results.check(ok, what);
    }

    private static void report(String name, String verdict, String detail) {
        Results.report("admin", name, verdict, detail);
    }

    private static void call(String name, Call c) {
        try {
            report(name, "PASS", c.run());
        } catch (Failed f) {
            report(name, "FAIL", f.getMessage());
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            report(name, "FAIL", e.toString());
        }
    }

    private static long committed(ConsumeStats s) {
        return s.getOffsetTable().values().stream().mapToLong(o -> o.getConsumerOffset()).sum();
    }

    public static void main(String[] args) throws Exception {
        String pgroup = PREFIX + "_g_admp";
        String cgroup = PREFIX + "_g_admc";
        DefaultMQProducer producer = new DefaultMQProducer(pgroup);
        producer.setNamesrvAddr(NAMESRV);
        producer.setInstanceName("admin-producer");
        producer.setSendMsgTimeout(10_000);
        producer.start();
        List<SendResult> sent = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            sent.add(producer.send(new Message(TOPIC, "ADM", "adm-key-" + RUN, ("admin " + i).getBytes(StandardCharsets.UTF_8))));
        }
        AtomicInteger consumed = new AtomicInteger();
        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer(cgroup);
        consumer.setNamesrvAddr(NAMESRV);
        consumer.setInstanceName("admin-consumer");
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        consumer.subscribe(TOPIC, "*");
        consumer.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            consumed.addAndGet(msgs.size());
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        consumer.start();
        for (int i = 0; i < 300 && consumed.get() < 5; i++) {
            Thread.sleep(100);
        }

        DefaultMQAdminExt admin = new DefaultMQAdminExt();
        admin.setNamesrvAddr(NAMESRV);
        admin.setInstanceName("admin-" + RUN);
        admin.start();
        String[] broker = new String[1];
        try {
            call("examineBrokerClusterInfo", () -> {
                ClusterInfo ci = admin.examineBrokerClusterInfo();
                Set<String> names = ci.getClusterAddrTable().get(CLUSTER);
                check(names != null && !names.isEmpty(), "cluster " + CLUSTER + " not in " + ci.getClusterAddrTable());
                String b = names.iterator().next();
                broker[0] = ci.getBrokerAddrTable().get(b).selectBrokerAddr();
                check(broker[0] != null, "broker " + b + " has no address");
                return "cluster " + CLUSTER + " brokers " + names + " master " + broker[0];
            });
            call("fetchAllTopicList", () -> {
                TopicList tl = admin.fetchAllTopicList();
                check(tl.getTopicList().contains(TOPIC), "topic list lacks " + TOPIC);
                return tl.getTopicList().size() + " topics";
            });
            call("examineTopicRouteInfo", () -> {
                TopicRouteData r = admin.examineTopicRouteInfo(TOPIC);
                check(!r.getQueueDatas().isEmpty() && !r.getBrokerDatas().isEmpty(), "empty route " + r);
                check(r.getBrokerDatas().get(0).getBrokerAddrs().get(0L) != null, "no master address in " + r);
                return r.getQueueDatas().get(0).getWriteQueueNums() + " write queues";
            });
            call("examineTopicStats", () -> {
                TopicStatsTable s = admin.examineTopicStats(TOPIC);
                long max = s.getOffsetTable().values().stream().mapToLong(o -> o.getMaxOffset()).sum();
                check(max >= 5, "max offsets sum to " + max);
                return s.getOffsetTable().size() + " queues, " + max + " messages";
            });
            call("examineConsumeStats", () -> {
                // The consumer commits its offsets every 5 s: poll until all 5 show (30 s at most).
                ConsumeStats s = admin.examineConsumeStats(cgroup);
                for (int i = 0; i < 30 && committed(s) < 5; i++) {
                    Thread.sleep(1000);
                    s = admin.examineConsumeStats(cgroup);
                }
                check(!s.getOffsetTable().isEmpty(), "no queues in consume stats");
                check(committed(s) >= 5, "consumer offsets sum to " + committed(s) + " after 30 s, 5 consumed");
                return s.getOffsetTable().size() + " queues, diff " + s.computeTotalDiff();
            });
            call("examineConsumerConnectionInfo", () -> {
                ConsumerConnection cc = admin.examineConsumerConnectionInfo(cgroup);
                check(!cc.getConnectionSet().isEmpty(), "no connection");
                check(cc.getSubscriptionTable().containsKey(TOPIC), "subscriptions " + cc.getSubscriptionTable().keySet());
                return cc.getConnectionSet().size() + " connection(s), " + cc.getConsumeType() + " " + cc.getMessageModel();
            });
            call("examineProducerConnectionInfo", () -> {
                ProducerConnection pc = admin.examineProducerConnectionInfo(pgroup, TOPIC);
                check(!pc.getConnectionSet().isEmpty(), "no producer connection");
                return pc.getConnectionSet().size() + " connection(s)";
            });
            call("getConsumerRunningInfo", () -> {
                ConsumerConnection cc = admin.examineConsumerConnectionInfo(cgroup);
                String clientId = cc.getConnectionSet().iterator().next().getClientId();
                ConsumerRunningInfo info = admin.getConsumerRunningInfo(cgroup, clientId, false);
                check(info != null && !info.getMqTable().isEmpty(), "no queues in running info");
                return info.getMqTable().size() + " queues held by " + clientId;
            });
            call("fetchBrokerRuntimeStats", () -> {
                KVTable kv = admin.fetchBrokerRuntimeStats(broker[0]);
                check(kv.getTable().containsKey("msgPutTotalTodayNow") || kv.getTable().containsKey("brokerVersionDesc"),
                    "runtime stats keys " + kv.getTable().keySet());
                return kv.getTable().size() + " entries";
            });
            call("getBrokerConfig", () -> {
                Properties p = admin.getBrokerConfig(broker[0]);
                check(p.getProperty("brokerName") != null, "no brokerName in " + p.keySet());
                return p.size() + " entries, brokerName " + p.getProperty("brokerName");
            });
            call("createAndUpdateTopicConfig", () -> {
                TopicConfig tc = new TopicConfig(PREFIX + "_admtopic", 2, 2, 6);
                admin.createAndUpdateTopicConfig(broker[0], tc);
                for (int i = 0; i < 50; i++) {
                    try {
                        if (!admin.examineTopicRouteInfo(tc.getTopicName()).getQueueDatas().isEmpty()) {
                            return "created " + tc.getTopicName();
                        }
                    } catch (Exception e) {
                        Thread.sleep(200);
                    }
                }
                throw new Failed("created topic never got a route");
            });
            call("getAllTopicConfig", () -> {
                TopicConfigSerializeWrapper w = admin.getAllTopicConfig(broker[0], 10_000);
                check(w.getTopicConfigTable().containsKey(TOPIC), "topic config table lacks " + TOPIC);
                return w.getTopicConfigTable().size() + " topic configs";
            });
            call("createAndUpdateSubscriptionGroupConfig", () -> {
                SubscriptionGroupConfig g = new SubscriptionGroupConfig();
                g.setGroupName(PREFIX + "_g_admgroup");
                g.setRetryMaxTimes(3);
                admin.createAndUpdateSubscriptionGroupConfig(broker[0], g);
                SubscriptionGroupConfig back = admin.examineSubscriptionGroupConfig(broker[0], g.getGroupName());
                check(back != null && back.getRetryMaxTimes() == 3, "read back " + back);
                return "group created, retryMaxTimes read back 3";
            });
            call("getAllSubscriptionGroup", () -> {
                SubscriptionGroupWrapper w = admin.getAllSubscriptionGroup(broker[0], 10_000);
                check(w.getSubscriptionGroupTable().containsKey(PREFIX + "_g_admgroup"), "group table lacks the new group");
                return w.getSubscriptionGroupTable().size() + " groups";
            });
            call("deleteSubscriptionGroup", () -> {
                String g = PREFIX + "_g_admgroup";
                admin.deleteSubscriptionGroup(broker[0], g, true);
                SubscriptionGroupWrapper w = admin.getAllSubscriptionGroup(broker[0], 10_000);
                check(!w.getSubscriptionGroupTable().containsKey(g), "group table still holds the deleted group");
                return "deleted with its offsets; no longer listed";
            });
            call("queryMessageByKey", () -> {
                List<MessageExt> found = admin.queryMessage(TOPIC, "adm-key-" + RUN, 32, 0, Long.MAX_VALUE).getMessageList();
                check(found.size() == 5, found.size() + " messages found by key, 5 sent");
                return "5 found by key";
            });
            call("viewMessage", () -> {
                SendResult r = sent.get(0);
                MessageExt byOffsetId = admin.viewMessage(TOPIC, r.getOffsetMsgId());
                check(byOffsetId != null && "adm-key-".concat(RUN).equals(byOffsetId.getKeys()), "view by offset id: " + byOffsetId);
                MessageExt byUniq = admin.viewMessage(TOPIC, r.getMsgId());
                check(byUniq != null && new String(byUniq.getBody(), StandardCharsets.UTF_8).equals("admin 0"), "view by unique id: " + byUniq);
                return "found by offset id and by unique id";
            });
            call("resetOffsetByTimestamp", () -> {
                Map<MessageQueue, Long> reset = admin.resetOffsetByTimestamp(TOPIC, cgroup, 0L, true);
                check(reset != null && !reset.isEmpty(), "no queues reset");
                return reset.size() + " queues reset to the start";
            });
            call("examineTopicConfig", () -> {
                TopicConfig tc = admin.examineTopicConfig(broker[0], TOPIC);
                check(tc != null && tc.getWriteQueueNums() > 0, "topic config " + tc);
                return tc.getWriteQueueNums() + " write queues";
            });
            call("deleteTopic", () -> {
                String t = PREFIX + "_admtopic";
                admin.deleteTopicInBroker(Set.of(broker[0]), t);
                admin.deleteTopicInNameServer(Set.of(NAMESRV), t);
                try {
                    TopicRouteData r = admin.examineTopicRouteInfo(t);
                    check(r.getQueueDatas().isEmpty(), "route still there after delete");
                } catch (Exception expected) {
                    // TOPIC_NOT_EXIST: gone
                }
                return "deleted " + t;
            });
        } finally {
            admin.shutdown();
            consumer.shutdown();
            producer.shutdown();
        }
        System.exit(Results.exitCode());
    }
}
