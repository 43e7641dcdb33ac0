package io.ferromq.tests.remoting;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;

import io.ferromq.tests.remoting.Results.Failed;

import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.MessageSelector;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.client.producer.TransactionSendResult;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * Remoting-protocol scenarios driven by the classic Apache RocketMQ 4.x Java client
 * (org.apache.rocketmq:rocketmq-client 4.9.8).
 *
 * <p>Run by tests/clients/remoting/run.sh; the name server, topics and groups come from the
 * environment. Each scenario prints {@code SCENARIO java4 <name> PASS|FAIL <detail>} and appends
 * the line without the prefix to FERROMQ_RESULTS_FILE. Exit code 0 only if no scenario failed.
 */
public final class Scenarios4x {
    private static final String NAMESRV = Results.env("FERROMQ_NAMESRV", "127.0.0.1:9876");
    private static final String T = Results.env("FERROMQ_TOPIC_PREFIX", "r4");
    private static final String G = Results.env("FERROMQ_GROUP_PREFIX", "r4_g");
    private static final String CLIENT = Results.env("FERROMQ_CLIENT_NAME", "java4");
    private static final String RUN = UUID.randomUUID().toString().substring(0, 8);
    /** How long a scenario waits for what it expects before it fails. */
    private static final long WAIT_MS = Long.parseLong(Results.env("FERROMQ_WAIT_MS", "60000"));
    /** How long a scenario keeps listening after it has everything, to catch duplicates. */
    private static final long QUIET_MS = 3000;




    /** Waits until cond holds or WAIT_MS passes. */
    private static boolean await(Supplier<Boolean> cond) throws InterruptedException {
        long end = System.currentTimeMillis() + WAIT_MS;
        while (System.currentTimeMillis() < end) {
            if (cond.get()) {
                return true;
            }
            Thread.sleep(100);
        }
        return cond.get();
    }

    private static DefaultMQProducer producer(String group) throws Exception {
        DefaultMQProducer p = new DefaultMQProducer(group);
        p.setNamesrvAddr(NAMESRV);
        p.setInstanceName(group);
        p.setSendMsgTimeout(10_000);
        p.start();
        return p;
    }

    private static DefaultMQPushConsumer consumer(String group, String topic, String tags) throws Exception {
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(group);
        c.setNamesrvAddr(NAMESRV);
        c.setInstanceName(group);
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(topic, tags);
        return c;
    }

    private static String body(MessageExt m) {
        return new String(m.getBody(), StandardCharsets.UTF_8);
    }

    /** Messages received per unique id, plus a duplicate count. */
    static final class Inbox {
        final Map<String, MessageExt> byId = new ConcurrentHashMap<>();
        final AtomicInteger duplicates = new AtomicInteger();

        void add(MessageExt m) {
            if (byId.putIfAbsent(m.getMsgId(), m) != null) {
                duplicates.incrementAndGet();
            }
        }
    }

    private static void report(String name, String verdict, String detail) {
        Results.report(CLIENT, name, verdict, detail);
    }

    interface Scenario {
        String run() throws Exception;
    }

    private static void check(boolean ok, String what) {
        Results.check(ok, what);
    }

    private static void scenario(String name, Scenario s) {
        long t0 = System.currentTimeMillis();
        try {
            String detail = s.run();
            report(name, "PASS", detail + " (" + (System.currentTimeMillis() - t0) + " ms)");
        } catch (Failed f) {
            report(name, "FAIL", f.getMessage());
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            report(name, "FAIL", e.toString());
        }
    }

    // ---- producers: sync, async, one-way and batch into one topic, read by one push consumer ----

    private static Message basic(String mode, int i) {
        // Bodies from 10 B to ~12 KiB: the 4.x client zlib-compresses bodies over 4 KiB.
        int size = 10 + (i * 1237) % 12_000;
        byte[] pad = new byte[size];
        ThreadLocalRandom.current().nextBytes(pad);
        String text = mode + "-" + i + "-" + RUN + "-" + Base64Less.encode(pad);
        Message m = new Message(T + "_basic", mode, mode + "-key-" + i + "-" + RUN, text.getBytes(StandardCharsets.UTF_8));
        m.putUserProperty("idx", Integer.toString(i));
        m.putUserProperty("uni", "ünï-cödé-" + i);
        return m;
    }

    /** Printable padding without java.util.Base64's '=' and '/' surprises in logs. */
    static final class Base64Less {
        static String encode(byte[] b) {
            StringBuilder sb = new StringBuilder(b.length);
            for (byte x : b) {
                sb.append((char) ('a' + ((x & 0xff) % 26)));
            }
            return sb.toString();
        }
    }

    private static void checkIntact(Inbox inbox, Map<String, Message> sent, String what) {
        for (Map.Entry<String, Message> e : sent.entrySet()) {
            MessageExt got = inbox.byId.get(e.getKey());
            check(got != null, what + ": message " + e.getKey() + " never delivered");
            Message m = e.getValue();
            check(Arrays.equals(got.getBody(), m.getBody()), what + ": body of " + e.getKey() + " altered");
            check(m.getTags().equals(got.getTags()), what + ": tag " + got.getTags() + " != " + m.getTags());
            check(m.getKeys().equals(got.getKeys()), what + ": keys " + got.getKeys() + " != " + m.getKeys());
            check(m.getUserProperty("uni").equals(got.getUserProperty("uni")), what + ": property uni altered");
            check(got.getReconsumeTimes() == 0, what + ": reconsumeTimes " + got.getReconsumeTimes());
            check(got.getTopic().equals(m.getTopic()), what + ": topic " + got.getTopic());
        }
    }

    private static void producers() throws Exception {
        DefaultMQProducer p = producer(G + "_basicp");
        Inbox inbox = new Inbox();
        Map<String, Message> sync = new HashMap<>();
        Map<String, Message> async = new ConcurrentHashMap<>();
        Map<String, Message> batch = new HashMap<>();
        List<Message> oneway = new ArrayList<>();
        String[] errors = new String[4];
        try {
            try {
                for (int i = 0; i < 20; i++) {
                    Message m = basic("SYNC", i);
                    SendResult r = p.send(m);
                    check(r.getSendStatus() == SendStatus.SEND_OK, "sync send status " + r.getSendStatus());
                    check(r.getMsgId() != null && r.getOffsetMsgId() != null, "sync send: no message id");
                    sync.put(r.getMsgId(), m);
                }
            } catch (Throwable e) {
                errors[0] = e.toString();
            }
            try {
                CountDownLatch done = new CountDownLatch(10);
                List<String> failed = new CopyOnWriteArrayList<>();
                for (int i = 0; i < 10; i++) {
                    Message m = basic("ASYNC", i);
                    p.send(m, new SendCallback() {
                        @Override
                        public void onSuccess(SendResult r) {
                            async.put(r.getMsgId(), m);
                            done.countDown();
                        }

                        @Override
                        public void onException(Throwable e) {
                            failed.add(e.toString());
                            done.countDown();
                        }
                    });
                }
                check(done.await(30, TimeUnit.SECONDS), "async: callbacks missing");
                check(failed.isEmpty(), "async: " + failed);
            } catch (Throwable e) {
                errors[1] = e.toString();
            }
            try {
                for (int i = 0; i < 10; i++) {
                    Message m = basic("ONEWAY", i);
                    p.sendOneway(m);
                    oneway.add(m);
                }
            } catch (Throwable e) {
                errors[2] = e.toString();
            }
            try {
                List<Message> msgs = new ArrayList<>();
                for (int i = 0; i < 10; i++) {
                    msgs.add(basic("BATCH", i));
                }
                SendResult r = p.send(msgs);
                check(r.getSendStatus() == SendStatus.SEND_OK, "batch send status " + r.getSendStatus());
                String[] ids = r.getMsgId().split(",");
                check(ids.length == 10, "batch: " + ids.length + " ids for 10 messages");
                for (int i = 0; i < 10; i++) {
                    batch.put(ids[i], msgs.get(i));
                }
            } catch (Throwable e) {
                errors[3] = e.toString();
            }
        } finally {
            p.shutdown();
        }

        DefaultMQPushConsumer c = consumer(G + "_basic", T + "_basic", "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            msgs.forEach(inbox::add);
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            int expected = sync.size() + async.size() + oneway.size() + batch.size();
            await(() -> inbox.byId.size() >= expected);
            Thread.sleep(QUIET_MS);
        } finally {
            c.shutdown();
        }
        String[] names = {"producer_sync", "producer_async", "producer_oneway", "producer_batch"};
        List<Map<String, Message>> sets = List.of(sync, async, Map.of(), batch);
        for (int k = 0; k < 4; k++) {
            final int kk = k;
            scenario(names[k], () -> {
                check(errors[kk] == null, "send failed: " + errors[kk]);
                if (kk == 2) {
                    // One-way sends have no result: find them by key.
                    Set<String> want = new HashSet<>();
                    oneway.forEach(m -> want.add(m.getKeys()));
                    Map<String, Message> found = new HashMap<>();
                    for (MessageExt m : inbox.byId.values()) {
                        for (Message o : oneway) {
                            if (o.getKeys().equals(m.getKeys())) {
                                found.put(m.getMsgId(), o);
                            }
                        }
                    }
                    check(found.size() == want.size(), "one-way: " + found.size() + " of " + want.size() + " delivered");
                    checkIntact(inbox, found, "one-way");
                    return found.size() + " one-way messages delivered intact";
                }
                checkIntact(inbox, sets.get(kk), names[kk]);
                check(inbox.duplicates.get() == 0, inbox.duplicates.get() + " duplicate deliveries in the topic");
                return sets.get(kk).size() + " sent, each delivered once intact";
            });
        }
    }

    // ---- orderly: per-key queue selection, MessageListenerOrderly (lock batch) ----

    private static String orderly() throws Exception {
        String topic = T + "_order";
        int groups = 4;
        int per = 8;
        DefaultMQProducer p = producer(G + "_orderp");
        try {
            for (int i = 0; i < per; i++) {
                for (int g = 0; g < groups; g++) {
                    Message m = new Message(topic, "O", ("g" + g + ":" + i + ":" + RUN).getBytes(StandardCharsets.UTF_8));
                    SendResult r = p.send(m, (mqs, msg, arg) -> mqs.get((Integer) arg % mqs.size()), g);
                    check(r.getSendStatus() == SendStatus.SEND_OK, "orderly send status " + r.getSendStatus());
                }
            }
        } finally {
            p.shutdown();
        }
        Map<String, List<Integer>> seen = new ConcurrentHashMap<>();
        Set<Integer> queues = ConcurrentHashMap.newKeySet();
        DefaultMQPushConsumer c = consumer(G + "_order", topic, "*");
        c.registerMessageListener((MessageListenerOrderly) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                String[] parts = body(m).split(":");
                seen.computeIfAbsent(parts[0], k -> new CopyOnWriteArrayList<>()).add(Integer.parseInt(parts[1]));
                queues.add(m.getQueueId());
            }
            return ConsumeOrderlyStatus.SUCCESS;
        });
        c.start();
        try {
            await(() -> seen.values().stream().mapToInt(List::size).sum() >= groups * per);
            Thread.sleep(QUIET_MS);
        } finally {
            c.shutdown();
        }
        for (int g = 0; g < groups; g++) {
            List<Integer> got = seen.getOrDefault("g" + g, List.of());
            List<Integer> want = new ArrayList<>();
            for (int i = 0; i < per; i++) {
                want.add(i);
            }
            check(got.equals(want), "group g" + g + " arrived as " + got);
        }
        return groups + " keys x " + per + " messages in order over " + queues.size() + " queues";
    }

    // ---- retries into %RETRY% and %DLQ% ----

    private static String retryAndDlq() throws Exception {
        String topic = T + "_retry";
        String group = G + "_retry";
        DefaultMQProducer p = producer(G + "_retryp");
        Set<String> retryOnce = new HashSet<>();
        Set<String> alwaysFail = new HashSet<>();
        try {
            for (int i = 0; i < 3; i++) {
                retryOnce.add(p.send(new Message(topic, "R", "once-" + i, ("once-" + i + "-" + RUN).getBytes(StandardCharsets.UTF_8))).getMsgId());
            }
            for (int i = 0; i < 2; i++) {
                alwaysFail.add(p.send(new Message(topic, "R", "dlq-" + i, ("dlq-" + i + "-" + RUN).getBytes(StandardCharsets.UTF_8))).getMsgId());
            }
        } finally {
            p.shutdown();
        }
        Map<String, List<Integer>> attempts = new ConcurrentHashMap<>();
        Map<String, String> retryTopicProp = new ConcurrentHashMap<>();
        DefaultMQPushConsumer c = consumer(group, topic, "*");
        c.setMaxReconsumeTimes(1);
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            ctx.setDelayLevelWhenNextConsume(1); // 1 s instead of the default 10 s
            boolean fail = false;
            for (MessageExt m : msgs) {
                attempts.computeIfAbsent(m.getMsgId(), k -> new CopyOnWriteArrayList<>()).add(m.getReconsumeTimes());
                if (m.getReconsumeTimes() > 0 && m.getProperty("RETRY_TOPIC") != null) {
                    retryTopicProp.put(m.getMsgId(), m.getProperty("RETRY_TOPIC"));
                }
                fail |= alwaysFail.contains(m.getMsgId()) || m.getReconsumeTimes() == 0;
            }
            return fail ? ConsumeConcurrentlyStatus.RECONSUME_LATER : ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        Inbox dlq = new Inbox();
        DefaultMQPushConsumer d = null;
        try {
            await(() -> {
                for (String id : retryOnce) {
                    if (attempts.getOrDefault(id, List.of()).size() < 2) {
                        return false;
                    }
                }
                for (String id : alwaysFail) {
                    if (attempts.getOrDefault(id, List.of()).size() < 2) {
                        return false;
                    }
                }
                return true;
            });
            Thread.sleep(QUIET_MS);
            d = consumer(G + "_dlqreader", "%DLQ%" + group, "*");
            d.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
                msgs.forEach(dlq::add);
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            });
            d.start();
            await(() -> dlq.byId.keySet().containsAll(alwaysFail));
        } finally {
            c.shutdown();
            if (d != null) {
                d.shutdown();
            }
        }
        for (String id : retryOnce) {
            check(attempts.getOrDefault(id, List.of()).equals(List.of(0, 1)), "retried message " + id + " attempts " + attempts.get(id));
            check(topic.equals(retryTopicProp.get(id)), "redelivered message lacks RETRY_TOPIC=" + topic + ": " + retryTopicProp.get(id));
        }
        for (String id : alwaysFail) {
            check(attempts.getOrDefault(id, List.of()).equals(List.of(0, 1)), "failing message " + id + " attempts " + attempts.get(id));
            check(dlq.byId.containsKey(id), "failing message " + id + " not in %DLQ%" + group);
            check(body(dlq.byId.get(id)).endsWith(RUN), "DLQ copy of " + id + " altered");
        }
        return "3 retried once (reconsumeTimes 0,1), 2 moved to %DLQ%" + group + " after 2 deliveries";
    }

    // ---- transactions with a check-back ----

    private static String transaction() throws Exception {
        String topic = T + "_tx";
        Map<String, Long> asked = new ConcurrentHashMap<>();
        Map<String, Long> sentAt = new ConcurrentHashMap<>();
        TransactionMQProducer p = new TransactionMQProducer(G + "_txp");
        p.setNamesrvAddr(NAMESRV);
        p.setInstanceName(G + "_txp");
        p.setTransactionListener(new TransactionListener() {
            @Override
            public LocalTransactionState executeLocalTransaction(Message msg, Object arg) {
                switch (msg.getKeys()) {
                    case "commit": return LocalTransactionState.COMMIT_MESSAGE;
                    case "rollback": return LocalTransactionState.ROLLBACK_MESSAGE;
                    default: return LocalTransactionState.UNKNOW;
                }
            }

            @Override
            public LocalTransactionState checkLocalTransaction(MessageExt msg) {
                if (!"check".equals(msg.getKeys())) {
                    return LocalTransactionState.UNKNOW;
                }
                asked.putIfAbsent(msg.getKeys(), System.currentTimeMillis());
                return LocalTransactionState.COMMIT_MESSAGE;
            }
        });
        p.start();
        Inbox inbox = new Inbox();
        DefaultMQPushConsumer c = consumer(G + "_tx", topic, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            msgs.forEach(inbox::add);
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            for (String k : List.of("commit", "rollback", "check")) {
                Message m = new Message(topic, "TX", k, (k + "-" + RUN).getBytes(StandardCharsets.UTF_8));
                TransactionSendResult r = p.sendMessageInTransaction(m, null);
                check(r.getSendStatus() == SendStatus.SEND_OK, "half message send status " + r.getSendStatus());
                sentAt.put(k, System.currentTimeMillis());
            }
            await(() -> keys(inbox).containsAll(List.of("commit", "check")));
            Thread.sleep(5000); // a rolled-back message would have shown up by now
        } finally {
            c.shutdown();
            p.shutdown();
        }
        Set<String> got = keys(inbox);
        check(asked.containsKey("check"), "the broker never asked the producer about the unresolved half message");
        check(got.contains("commit"), "committed message not delivered");
        check(got.contains("check"), "message committed through the check-back not delivered");
        check(!got.contains("rollback"), "rolled-back message delivered");
        return "commit and check-back delivered, rollback not; check-back after " + (asked.get("check") - sentAt.get("check")) + " ms";
    }

    private static Set<String> keys(Inbox inbox) {
        Set<String> out = new HashSet<>();
        inbox.byId.values().forEach(m -> out.add(m.getKeys()));
        return out;
    }

    // ---- filters ----

    private static String tagFilter() throws Exception {
        String topic = T + "_filter";
        DefaultMQProducer p = producer(G + "_filterp");
        try {
            for (String tag : List.of("TagA", "TagB", "TagC")) {
                for (int i = 0; i < 5; i++) {
                    p.send(new Message(topic, tag, (tag + i + RUN).getBytes(StandardCharsets.UTF_8)));
                }
            }
        } finally {
            p.shutdown();
        }
        Inbox inbox = new Inbox();
        DefaultMQPushConsumer c = consumer(G + "_filter", topic, "TagA || TagB");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            msgs.forEach(inbox::add);
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            await(() -> inbox.byId.size() >= 10);
            Thread.sleep(QUIET_MS);
        } finally {
            c.shutdown();
        }
        Map<String, Integer> count = new HashMap<>();
        inbox.byId.values().forEach(m -> count.merge(m.getTags(), 1, Integer::sum));
        check(count.getOrDefault("TagA", 0) == 5 && count.getOrDefault("TagB", 0) == 5, "tags received " + count);
        check(!count.containsKey("TagC"), "TagC delivered to a TagA || TagB subscription: " + count);
        return "TagA 5, TagB 5, TagC 0";
    }

    private static String sqlFilter() throws Exception {
        String topic = T + "_sql";
        DefaultMQProducer p = producer(G + "_sqlp");
        try {
            for (int i = 0; i < 10; i++) {
                Message m = new Message(topic, "S", ("n" + i + RUN).getBytes(StandardCharsets.UTF_8));
                m.putUserProperty("n", Integer.toString(i));
                p.send(m);
            }
        } finally {
            p.shutdown();
        }
        Inbox inbox = new Inbox();
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(G + "_sql");
        c.setNamesrvAddr(NAMESRV);
        c.setInstanceName(G + "_sql");
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(topic, MessageSelector.bySql("n >= 5"));
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            msgs.forEach(inbox::add);
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            await(() -> inbox.byId.size() >= 5);
            Thread.sleep(QUIET_MS);
        } finally {
            c.shutdown();
        }
        Set<Integer> ns = new HashSet<>();
        inbox.byId.values().forEach(m -> ns.add(Integer.parseInt(m.getUserProperty("n"))));
        check(ns.equals(Set.of(5, 6, 7, 8, 9)), "SQL92 n >= 5 delivered n=" + ns);
        return "n >= 5 delivered exactly 5..9";
    }

    // ---- delay levels ----

    private static String delayLevels() throws Exception {
        String topic = T + "_delay";
        long[] levelMs = {0, 1000, 5000, 10000}; // default levels 1..3: 1s 5s 10s
        Map<String, Long> dueAt = new ConcurrentHashMap<>();
        Map<String, Long> gotAt = new ConcurrentHashMap<>();
        DefaultMQPushConsumer c = consumer(G + "_delay", topic, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            long now = System.currentTimeMillis();
            msgs.forEach(m -> gotAt.putIfAbsent(m.getKeys(), now));
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        DefaultMQProducer p = producer(G + "_delayp");
        try {
            Thread.sleep(2000); // let the consumer take its queues
            for (int level : new int[] {3, 1, 2, 1, 3, 2}) {
                String key = "L" + level + "-" + dueAt.size();
                Message m = new Message(topic, "D", key, (key + RUN).getBytes(StandardCharsets.UTF_8));
                m.setDelayTimeLevel(level);
                long t = System.currentTimeMillis();
                p.send(m);
                dueAt.put(key, t + levelMs[level]);
            }
            await(() -> gotAt.keySet().containsAll(dueAt.keySet()));
        } finally {
            p.shutdown();
            c.shutdown();
        }
        List<Long> late = new ArrayList<>();
        for (Map.Entry<String, Long> e : dueAt.entrySet()) {
            Long got = gotAt.get(e.getKey());
            check(got != null, "delayed message " + e.getKey() + " never delivered");
            // 50 ms slack: the due time is taken before the send call returns.
            check(got >= e.getValue() - 50, e.getKey() + " delivered " + (e.getValue() - got) + " ms early");
            late.add(got - e.getValue());
        }
        late.sort(Long::compare);
        return "6 messages at levels 1-3, lateness min/p50/max " + late.get(0) + "/" + late.get(3) + "/" + late.get(5) + " ms";
    }

    public static void main(String[] args) throws Exception {
        List<String> only = args.length > 0 ? Arrays.asList(args[0].split(",")) : null;
        if (only == null || only.contains("producer")) {
            try {
                producers();
            } catch (Throwable e) {
                e.printStackTrace(System.out);
                for (String n : List.of("producer_sync", "producer_async", "producer_oneway", "producer_batch")) {
                    report(n, "FAIL", e.toString());
                }
            }
        }
        if (only == null || only.contains("orderly")) {
            scenario("push_orderly", Scenarios4x::orderly);
        }
        if (only == null || only.contains("retry")) {
            scenario("retry_dlq", Scenarios4x::retryAndDlq);
        }
        if (only == null || only.contains("transaction")) {
            scenario("transaction", Scenarios4x::transaction);
        }
        if (only == null || only.contains("tag")) {
            scenario("tag_filter", Scenarios4x::tagFilter);
        }
        if (only == null || only.contains("sql")) {
            scenario("sql_filter", Scenarios4x::sqlFilter);
        }
        if (only == null || only.contains("delay")) {
            scenario("delay_level", Scenarios4x::delayLevels);
        }
        System.exit(Results.exitCode());
    }
}
