package io.ferromq.tests;

import java.io.FileWriter;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.FilterExpressionType;
import org.apache.rocketmq.client.apis.consumer.PushConsumer;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.message.MessageBuilder;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.RecallReceipt;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.Transaction;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;
import org.apache.rocketmq.client.java.exception.NotFoundException;

/**
 * Protocol scenarios driven by the official RocketMQ 5 Java client (rocketmq-client-java).
 *
 * <p>Run by tests/suites/30-clients.sh (ferromq) or tests/clients/run-against-rocketmq.sh (reference);
 * topics and groups come from the environment (see ../lib.sh). Each scenario prints one line
 * {@code SCENARIO java <name> PASS|FAIL|SKIP <detail>} and appends it to FERROMQ_RESULTS_FILE.
 * Exit code 0 only if no scenario failed.
 */
public final class Scenarios {
    private static final String ENDPOINT = env("FERROMQ_ENDPOINT", "127.0.0.1:8081");
    /** FERROMQ_SCENARIOS: comma-separated scenarios to run (empty: all); the run script reports the rest. */
    private static final List<String> ONLY = Arrays.asList(env("FERROMQ_SCENARIOS", "").split(","));
    private static final String GROUP_PREFIX = env("FERROMQ_GROUP_PREFIX", "java_g");
    private static final int RETRY_INVISIBLE_SECS = Integer.parseInt(env("FERROMQ_RETRY_INVISIBLE_SECS", "10"));
    private static final int DLQ_MAX_ATTEMPTS = Integer.parseInt(env("FERROMQ_DLQ_MAX_ATTEMPTS", "2"));
    private static final Duration AWAIT = Duration.ofSeconds(5);
    private static final Duration INVISIBLE = Duration.ofSeconds(30);
    private static final int MAX_BODY = 4 * 1024 * 1024;
    private static final int TOPIC_NOT_FOUND = 40402;
    private static final String RUN = UUID.randomUUID().toString().substring(0, 8);
    /** Clock granularity allowed when judging "delivered before its delivery timestamp". */
    private static final long EARLY_SLACK_MS = 5;
    /** How long the transaction scenario receives after commit/rollback. */
    private static final long TX_WINDOW_MS = 15_000;

    private static final List<String> SCENARIOS = List.of("send_receive_ack", "tag_filter", "sql_filter", "redelivery",
        "fifo_order", "dead_letter", "push_consume", "push_retry", "unknown_topic", "oversized_body", "delay", "recall",
        "transaction", "priority");
    private static final ClientServiceProvider PROVIDER = ClientServiceProvider.loadService();
    private static Producer producer;
    private static int failures;
    private static int skipped;
    /** Detail a scenario reports with PASS (measured figures); reset before each scenario. */
    private static String passDetail = "";

    /** An assertion failure inside a scenario. */
    static final class Failed extends RuntimeException {
        Failed(String msg) {
            super(msg);
        }
    }

    /** The scenario cannot run against this target or with this client version. */
    static final class Skipped extends RuntimeException {
        Skipped(String msg) {
            super(msg);
        }
    }

    interface Scenario {
        void run() throws Exception;
    }

    private static String env(String k, String dflt) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? dflt : v;
    }

    private static String topic(String kind) {
        return env("FERROMQ_TOPIC_" + kind.toUpperCase(), "java_" + kind);
    }

    /** The target's reason for not supporting a scenario (FERROMQ_SKIP_&lt;SCENARIO&gt;, set by the run script). */
    private static String unsupported(String scenario) {
        return System.getenv("FERROMQ_SKIP_" + scenario.toUpperCase());
    }

    private static String group(String kind) {
        return GROUP_PREFIX + "_" + kind;
    }

    private static void check(boolean ok, String msg) {
        if (!ok) {
            throw new Failed(msg);
        }
    }

    private static ClientConfiguration config() {
        return ClientConfiguration.newBuilder()
            .setEndpoints(ENDPOINT)
            .enableSsl(false)
            .setRequestTimeout(Duration.ofSeconds(10))
            .build();
    }

    private static byte[] bodyFor(int i, String scenario) {
        byte[] head = (scenario + ":" + RUN + ":" + i + ":").getBytes(StandardCharsets.UTF_8);
        int n = (i * 131) % 3000 + 1;
        byte[] b = Arrays.copyOf(head, head.length + n);
        for (int j = 0; j < n; j++) {
            b[head.length + j] = (byte) ((i * 7 + j) % 256);
        }
        return b;
    }

    private static byte[] bytes(ByteBuffer buf) {
        ByteBuffer d = buf.duplicate();
        byte[] out = new byte[d.remaining()];
        d.get(out);
        return out;
    }

    private static Message message(String topic, byte[] body, String tag, List<String> keys, Map<String, String> props,
                                   String messageGroup) {
        MessageBuilder b = PROVIDER.newMessageBuilder().setTopic(topic).setBody(body);
        if (tag != null) {
            b.setTag(tag);
        }
        if (keys != null && !keys.isEmpty()) {
            b.setKeys(keys.toArray(new String[0]));
        }
        if (props != null) {
            props.forEach(b::addProperty);
        }
        if (messageGroup != null) {
            b.setMessageGroup(messageGroup);
        }
        return b.build();
    }

    private static List<String> keys(String... k) {
        return Arrays.asList(k);
    }

    private static SimpleConsumer simple(String kind, String topic, String expression) throws ClientException {
        return simple(kind, topic, expression, FilterExpressionType.TAG);
    }

    private static SimpleConsumer simple(String kind, String topic, String expression, FilterExpressionType type)
        throws ClientException {
        return PROVIDER.newSimpleConsumerBuilder()
            .setClientConfiguration(config())
            .setConsumerGroup(group(kind))
            .setAwaitDuration(AWAIT)
            .setSubscriptionExpressions(Collections.singletonMap(topic, new FilterExpression(expression, type)))
            .build();
    }

    private static List<MessageView> receive(SimpleConsumer c, int max, Duration invisible) throws ClientException {
        List<MessageView> l = c.receive(max, invisible);
        return l == null ? Collections.emptyList() : l;
    }

    // ---- scenarios ------------------------------------------------------------------------------------------

    static void sendReceiveAck() throws Exception {
        String t = topic("normal");
        int n = 20;
        Map<String, Object[]> expected = new LinkedHashMap<>();
        for (int i = 0; i < n; i++) {
            String tag = i % 2 == 0 ? "TagA" : "TagB";
            Set<String> ks = new TreeSet<>(List.of("key-" + RUN + "-" + i, "order-" + i));
            Map<String, String> props = Map.of("seq", Integer.toString(i), "origin", "java", "text", "héllo wörld ✓");
            byte[] body = i != n - 1 ? bodyFor(i, "sra") : randomBytes(256 * 1024);
            SendReceipt r = producer.send(message(t, body, tag, new ArrayList<>(ks), props, null));
            check(r.getMessageId() != null, "send receipt without message id");
            expected.put(r.getMessageId().toString(), new Object[] {body, tag, ks, props});
        }
        check(expected.size() == n, "duplicate message ids in send receipts");
        try (SimpleConsumer c = simple("normal", t, "*")) {
            Set<String> acked = new HashSet<>();
            List<String> problems = new ArrayList<>();
            long end = System.currentTimeMillis() + 60_000;
            while (acked.size() < n && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    String id = m.getMessageId().toString();
                    Object[] e = expected.get(id);
                    if (e == null) {
                        problems.add("unexpected message " + id);
                        continue;
                    }
                    if (acked.contains(id)) {
                        problems.add("acked message " + id + " delivered again");
                        continue;
                    }
                    if (!t.equals(m.getTopic())) {
                        problems.add(id + ": topic " + m.getTopic());
                    }
                    byte[] body = bytes(m.getBody());
                    if (!Arrays.equals(body, (byte[]) e[0])) {
                        problems.add(id + ": body differs (len " + body.length + " vs " + ((byte[]) e[0]).length + ")");
                    }
                    if (!m.getTag().orElse("").equals(e[1])) {
                        problems.add(id + ": tag " + m.getTag() + " != " + e[1]);
                    }
                    if (!new TreeSet<>(m.getKeys()).equals(e[2])) {
                        problems.add(id + ": keys " + m.getKeys() + " != " + e[2]);
                    }
                    @SuppressWarnings("unchecked")
                    Map<String, String> props = (Map<String, String>) e[3];
                    for (Map.Entry<String, String> p : props.entrySet()) {
                        if (!p.getValue().equals(m.getProperties().get(p.getKey()))) {
                            problems.add(id + ": property " + p.getKey() + "=" + m.getProperties().get(p.getKey()));
                        }
                    }
                    if (m.getDeliveryAttempt() != 1) {
                        problems.add(id + ": delivery attempt " + m.getDeliveryAttempt() + " on first delivery");
                    }
                    c.ack(m);
                    acked.add(id);
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            check(acked.size() == n, "received+acked " + acked.size() + " of " + n + " sent (lost " + (n - acked.size()) + ")");
            for (int round = 0; round < 2; round++) {
                List<MessageView> again = receive(c, 32, INVISIBLE);
                check(again.isEmpty(), again.size() + " message(s) delivered after everything was acked");
            }
        }
    }

    static void tagFilter() throws Exception {
        String t = topic("filter");
        Map<String, Set<String>> sent = new HashMap<>();
        for (int i = 0; i < 15; i++) {
            String tag = String.valueOf("ABC".charAt(i % 3));
            SendReceipt r = producer.send(message(t, ("filter " + RUN + " " + i + " " + tag).getBytes(StandardCharsets.UTF_8),
                tag, null, null, null));
            sent.computeIfAbsent(tag, k -> new HashSet<>()).add(r.getMessageId().toString());
        }
        try (SimpleConsumer c = simple("filter", t, "A || B")) {
            Map<String, String> got = new HashMap<>();
            long end = System.currentTimeMillis() + 60_000;
            int rounds = 0;
            // until all A/B arrived, then two more rounds in which a C must not show up
            while (System.currentTimeMillis() < end && rounds < 2) {
                if (got.size() >= 10) {
                    rounds++;
                }
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    got.put(m.getMessageId().toString(), m.getTag().orElse(""));
                    c.ack(m);
                }
            }
            List<String> wrong = new ArrayList<>();
            got.forEach((id, tag) -> {
                if (!tag.equals("A") && !tag.equals("B")) {
                    wrong.add(id + " tag " + tag);
                }
            });
            check(wrong.isEmpty(), "filter 'A || B' delivered: " + wrong);
            Set<String> missing = new HashSet<>(sent.get("A"));
            missing.addAll(sent.get("B"));
            missing.removeAll(got.keySet());
            check(missing.isEmpty(), missing.size() + " A/B message(s) never delivered");
        }
    }

    static void sqlFilter() throws Exception {
        String t = topic("filter");
        // `run` keeps other scenarios' messages out of the expression.
        String expression = "run = '" + RUN + "' AND region IS NOT NULL AND "
            + "((amount >= 100 AND region = 'eu') OR amount BETWEEN 10 AND 30)";
        Set<String> want = new HashSet<>();
        for (int i = 0; i < 30; i++) {
            Map<String, String> props = new HashMap<>();
            props.put("run", RUN);
            props.put("amount", String.valueOf(i * 10));
            String region = i % 5 == 0 ? null : (i % 2 == 0 ? "eu" : "us");
            if (region != null) {
                props.put("region", region);
            }
            SendReceipt r = producer.send(message(t, ("sql " + RUN + " " + i).getBytes(StandardCharsets.UTF_8), "S",
                null, props, null));
            if (region != null && ((i * 10 >= 100 && region.equals("eu")) || (i * 10 >= 10 && i * 10 <= 30))) {
                want.add(r.getMessageId().toString());
            }
        }
        try (SimpleConsumer c = simple("sql", t, expression, FilterExpressionType.SQL92)) {
            Set<String> got = new HashSet<>();
            long end = System.currentTimeMillis() + 60_000;
            int rounds = 0;
            while (System.currentTimeMillis() < end && rounds < 2) {
                if (got.size() >= want.size()) {
                    rounds++;
                }
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    got.add(m.getMessageId().toString());
                    c.ack(m);
                }
            }
            Set<String> extra = new HashSet<>(got);
            extra.removeAll(want);
            Set<String> missing = new HashSet<>(want);
            missing.removeAll(got);
            check(extra.isEmpty() && missing.isEmpty(), "SQL filter: " + missing.size() + " matching message(s) missing, "
                + extra.size() + " non-matching delivered");
        }
        // A malformed expression is refused (ILLEGAL_FILTER_EXPRESSION), never silently matched. The
        // server answers the consumer's Telemetry settings with that status; this Java client logs
        // it as an unrecognized command and its start-up then fails, so a failed start counts as
        // the refusal. A consumer that does start must then be refused on receive.
        SimpleConsumer bad;
        try {
            bad = simple("sqlbad", t, "amount >>> 5", FilterExpressionType.SQL92);
        } catch (Exception e) {
            return;
        }
        try (SimpleConsumer b = bad) {
            receive(b, 8, INVISIBLE);
            check(false, "a malformed SQL expression was accepted on receive");
        } catch (Failed f) {
            throw f;
        } catch (Exception e) {
            StringBuilder sb = new StringBuilder();
            for (Throwable c = e; c != null && sb.length() < 4000; c = c.getCause()) {
                sb.append(c).append(" | ");
            }
            String detail = sb.toString();
            check(detail.contains("40010") || detail.toUpperCase().contains("FILTER"), "unexpected refusal: " + detail);
        }
    }

    static void redelivery() throws Exception {
        String t = topic("retry");
        byte[] body = ("redeliver me " + RUN).getBytes(StandardCharsets.UTF_8);
        SendReceipt r = producer.send(message(t, body, "retry", keys("rk-" + RUN), null, null));
        String id = r.getMessageId().toString();
        try (SimpleConsumer c = simple("retry", t, "*")) {
            Duration retryInvisible = Duration.ofSeconds(RETRY_INVISIBLE_SECS);
            MessageView first = null;
            long end = System.currentTimeMillis() + 60_000;
            while (first == null && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 1, retryInvisible)) {
                    first = m;
                }
            }
            check(first != null, "message never delivered");
            long tFirst = System.currentTimeMillis();
            check(first.getMessageId().toString().equals(id), "unexpected message " + first.getMessageId());
            check(first.getDeliveryAttempt() == 1, "first delivery attempt " + first.getDeliveryAttempt());
            MessageView second = null;
            end = System.currentTimeMillis() + (RETRY_INVISIBLE_SECS + 40) * 1000L;
            while (second == null && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 1, INVISIBLE)) {
                    check(m.getMessageId().toString().equals(id), "unexpected message " + m.getMessageId());
                    second = m;
                }
            }
            check(second != null, "not redelivered within " + (RETRY_INVISIBLE_SECS + 40) + " s");
            double waited = (System.currentTimeMillis() - tFirst) / 1000.0;
            check(waited >= RETRY_INVISIBLE_SECS - 1.5,
                String.format("redelivered after %.1f s < invisible %d s", waited, RETRY_INVISIBLE_SECS));
            check(second.getDeliveryAttempt() == 2,
                "redelivery has delivery attempt " + second.getDeliveryAttempt() + ", want 2");
            check(Arrays.equals(bytes(second.getBody()), body), "redelivered body differs");
            c.ack(second);
            end = System.currentTimeMillis() + (RETRY_INVISIBLE_SECS + 2) * 1000L;
            while (System.currentTimeMillis() < end) {
                List<MessageView> again = receive(c, 1, retryInvisible);
                check(again.isEmpty(), "acked message came back (attempt " +
                    (again.isEmpty() ? 0 : again.get(0).getDeliveryAttempt()) + ")");
            }
        }
    }

    static void fifoOrder() throws Exception {
        String t = topic("fifo");
        int perGroup = 6;
        List<String> groups = new ArrayList<>();
        for (int g = 0; g < 4; g++) {
            groups.add("mg" + g + "-" + RUN);
        }
        for (int s = 0; s < perGroup; s++) {
            for (String g : groups) {
                producer.send(message(t, (g + "|" + s).getBytes(StandardCharsets.UTF_8), "fifo", null,
                    Map.of("seq", Integer.toString(s)), g));
            }
        }
        Map<String, Integer> next = new HashMap<>();
        groups.forEach(g -> next.put(g, 0));
        List<String> problems = new ArrayList<>();
        try (SimpleConsumer c = simple("fifo", t, "*")) {
            MessageView held = null;
            long end = System.currentTimeMillis() + 60_000;
            while (held == null && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 1, INVISIBLE)) {
                    held = m;
                }
            }
            check(held != null, "no FIFO message delivered");
            check(fifoValid(held, null, next, problems), String.join("; ", problems));
            String hg = held.getMessageGroup().orElse("");
            // While it is held, nothing later of its message group may be delivered.
            for (int round = 0; round < 2; round++) {
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    if (fifoValid(m, hg, next, problems)) {
                        c.ack(m);
                        next.merge(m.getMessageGroup().get(), 1, Integer::sum);
                    }
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            c.ack(held);
            next.merge(hg, 1, Integer::sum);
            end = System.currentTimeMillis() + 90_000;
            while (next.values().stream().mapToInt(Integer::intValue).sum() < groups.size() * perGroup
                && System.currentTimeMillis() < end && problems.isEmpty()) {
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    if (fifoValid(m, null, next, problems)) {
                        c.ack(m);
                        next.merge(m.getMessageGroup().get(), 1, Integer::sum);
                    }
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            check(next.values().stream().allMatch(v -> v == perGroup), "incomplete: " + next);
        }
    }

    private static boolean fifoValid(MessageView m, String heldGroup, Map<String, Integer> next, List<String> problems) {
        String g = m.getMessageGroup().orElse(null);
        int s = Integer.parseInt(m.getProperties().getOrDefault("seq", "-1"));
        if (g == null || !next.containsKey(g)) {
            problems.add("message with group " + g);
            return false;
        }
        if (g.equals(heldGroup)) {
            problems.add(g + " seq " + s + " delivered while seq " + next.get(g) + " is unacked");
            return false;
        }
        if (s != next.get(g)) {
            problems.add(g + ": got seq " + s + ", expected " + next.get(g));
            return false;
        }
        if (!Arrays.equals(bytes(m.getBody()), (g + "|" + s).getBytes(StandardCharsets.UTF_8))) {
            problems.add(g + " seq " + s + ": body differs");
        }
        return true;
    }

    /**
     * The dlq group allows DLQ_MAX_ATTEMPTS deliveries; a message never acked then moves to %DLQ%&lt;group&gt;,
     * where another group can read it, intact and with the same message id.
     */
    static void deadLetter() throws Exception {
        String t = topic("dlq");
        byte[] body = ("dead letter " + RUN).getBytes(StandardCharsets.UTF_8);
        String id = producer.send(message(t, body, "dlq", keys("dk-" + RUN), Map.of("origin", "java"), null))
            .getMessageId().toString();
        Duration retryInvisible = Duration.ofSeconds(RETRY_INVISIBLE_SECS);
        try (SimpleConsumer c = simple("dlq", t, "*")) {
            List<Integer> attempts = new ArrayList<>();
            long end = System.currentTimeMillis() + (DLQ_MAX_ATTEMPTS * RETRY_INVISIBLE_SECS + 60) * 1000L;
            while (attempts.size() < DLQ_MAX_ATTEMPTS && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 1, retryInvisible)) {
                    check(m.getMessageId().toString().equals(id), "unexpected message " + m.getMessageId());
                    attempts.add(m.getDeliveryAttempt());
                }
            }
            List<Integer> want = new ArrayList<>();
            for (int i = 1; i <= DLQ_MAX_ATTEMPTS; i++) {
                want.add(i);
            }
            check(attempts.equals(want), "delivery attempts " + attempts);
            String dlqTopic = "%DLQ%" + group("dlq");
            MessageView found = null;
            SimpleConsumer reader = null;
            try {
                end = System.currentTimeMillis() + (RETRY_INVISIBLE_SECS + 60) * 1000L;
                while (found == null && System.currentTimeMillis() < end) {
                    // Keep polling the source group: it must not get the message a further time (and the
                    // reference moves a message to the DLQ when it is due again, i.e. on a later receive).
                    List<MessageView> again = receive(c, 1, retryInvisible);
                    check(again.isEmpty(), "delivered again after " + DLQ_MAX_ATTEMPTS + " attempts (attempt "
                        + (again.isEmpty() ? 0 : again.get(0).getDeliveryAttempt()) + ")");
                    if (reader == null) {
                        try {
                            reader = simple("dlqreader", dlqTopic, "*");
                        } catch (Exception e) { // the DLQ topic may not exist before the first dead letter
                            Thread.sleep(1000);
                            continue;
                        }
                    }
                    List<MessageView> got;
                    try {
                        got = receive(reader, 32, INVISIBLE);
                    } catch (ClientException e) {
                        Thread.sleep(1000);
                        got = Collections.emptyList();
                    }
                    for (MessageView m : got) {
                        reader.ack(m);
                        if (m.getMessageId().toString().equals(id) || Arrays.equals(bytes(m.getBody()), body)) {
                            found = m;
                        }
                    }
                }
            } finally {
                if (reader != null) {
                    reader.close();
                }
            }
            check(found != null, "not found in " + dlqTopic);
            check(found.getMessageId().toString().equals(id),
                "DLQ copy has message id " + found.getMessageId() + ", sent " + id);
            check(Arrays.equals(bytes(found.getBody()), body) && found.getTag().orElse("").equals("dlq")
                && found.getKeys().contains("dk-" + RUN), "DLQ copy differs");
            check("java".equals(found.getProperties().get("origin")), "DLQ copy lost user properties: "
                + found.getProperties());
        }
    }

    static void pushConsume() throws Exception {
        String t = topic("push");
        int n = 20;
        Map<String, byte[]> expected = new ConcurrentHashMap<>();
        for (int i = 0; i < n / 2; i++) {
            byte[] b = bodyFor(i, "push");
            expected.put(producer.send(message(t, b, "push", null, null, null)).getMessageId().toString(), b);
        }
        Map<String, List<byte[]>> seen = new ConcurrentHashMap<>();
        try (PushConsumer c = PROVIDER.newPushConsumerBuilder()
            .setClientConfiguration(config())
            .setConsumerGroup(group("push"))
            .setSubscriptionExpressions(Collections.singletonMap(t, new FilterExpression("*", FilterExpressionType.TAG)))
            .setConsumptionThreadCount(4)
            .setMessageListener(m -> {
                seen.computeIfAbsent(m.getMessageId().toString(), k -> new CopyOnWriteArrayList<>()).add(bytes(m.getBody()));
                return ConsumeResult.SUCCESS;
            })
            .build()) {
            Thread.sleep(1000);
            for (int i = n / 2; i < n; i++) {
                byte[] b = bodyFor(i, "push");
                expected.put(producer.send(message(t, b, "push", null, null, null)).getMessageId().toString(), b);
            }
            long end = System.currentTimeMillis() + 60_000;
            while (!seen.keySet().containsAll(expected.keySet()) && System.currentTimeMillis() < end) {
                Thread.sleep(200);
            }
            Thread.sleep(3000); // give duplicates a chance to show up
            Set<String> missing = new HashSet<>(expected.keySet());
            missing.removeAll(seen.keySet());
            check(missing.isEmpty(), "push consumer got " + (n - missing.size()) + " of " + n + " messages");
            List<String> dups = new ArrayList<>();
            seen.forEach((k, v) -> {
                if (v.size() > 1) {
                    dups.add(k + " x" + v.size());
                }
            });
            check(dups.isEmpty(), "consumed more than once: " + dups);
            Set<String> extra = new HashSet<>(seen.keySet());
            extra.removeAll(expected.keySet());
            check(extra.isEmpty(), "unexpected messages " + extra);
            for (Map.Entry<String, byte[]> e : expected.entrySet()) {
                check(Arrays.equals(seen.get(e.getKey()).get(0), e.getValue()), "body differs for " + e.getKey());
            }
        }
    }

    /**
     * A FAILURE from the listener makes the push consumer nack (ChangeInvisibleDuration with its backoff delay):
     * the message must come back with delivery attempt 2 and, once accepted, never again.
     */
    static void pushRetry() throws Exception {
        String t = topic("pushretry");
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            ids.add(producer.send(message(t, ("nack " + RUN + " " + i).getBytes(StandardCharsets.UTF_8), "nack",
                null, null, null)).getMessageId().toString());
        }
        Map<String, List<Integer>> attempts = new ConcurrentHashMap<>();
        try (PushConsumer c = PROVIDER.newPushConsumerBuilder()
            .setClientConfiguration(config())
            .setConsumerGroup(group("pushretry"))
            .setSubscriptionExpressions(Collections.singletonMap(t, new FilterExpression("*", FilterExpressionType.TAG)))
            .setConsumptionThreadCount(2)
            .setMessageListener(m -> {
                List<Integer> seen = attempts.computeIfAbsent(m.getMessageId().toString(), k -> new CopyOnWriteArrayList<>());
                seen.add(m.getDeliveryAttempt());
                return seen.size() == 1 ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
            })
            .build()) {
            long end = System.currentTimeMillis() + 60_000;
            while (System.currentTimeMillis() < end
                && !ids.stream().allMatch(id -> attempts.getOrDefault(id, List.of()).size() >= 2)) {
                Thread.sleep(200);
            }
            Thread.sleep(3000);
            Map<String, List<Integer>> bad = new HashMap<>();
            for (String id : ids) {
                List<Integer> a = attempts.getOrDefault(id, List.of());
                if (!a.equals(List.of(1, 2))) {
                    bad.put(id, a);
                }
            }
            check(bad.isEmpty(), "delivery attempts per message (want [1, 2]): " + bad);
        }
    }

    static void unknownTopic() throws Exception {
        try {
            producer.send(message(topic("missing"), "nobody home".getBytes(StandardCharsets.UTF_8), "x", null, null, null));
        } catch (NotFoundException e) {
            check(String.valueOf(e.getMessage()).contains("response-code=" + TOPIC_NOT_FOUND)
                    || String.valueOf(e.getMessage()).contains(Integer.toString(TOPIC_NOT_FOUND)),
                "NotFoundException without code " + TOPIC_NOT_FOUND + ": " + e.getMessage());
            return;
        } catch (ClientException e) {
            throw new Failed("expected NotFoundException (TOPIC_NOT_FOUND " + TOPIC_NOT_FOUND + "), got "
                + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        throw new Failed("send to an unknown topic succeeded");
    }

    static void oversizedBody() throws Exception {
        byte[] big = new byte[MAX_BODY + 1];
        Arrays.fill(big, (byte) 'x');
        try {
            producer.send(message(topic("normal"), big, "big", null, null, null));
            throw new Failed("a " + big.length + "-byte body was accepted");
        } catch (ClientException | IllegalArgumentException e) {
            String m = String.valueOf(e.getMessage()).toLowerCase();
            check(m.contains("exceed") || m.contains("too large") || m.contains("41301") || m.contains("41300"),
                "unexpected error for an oversized body: " + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        check(producer.send(message(topic("normal"), "small after big".getBytes(StandardCharsets.UTF_8), "small",
            null, null, null)).getMessageId() != null, "producer broken after the oversized send");
    }

    private static String quantiles(List<Long> values) {
        List<Long> v = new ArrayList<>(values);
        Collections.sort(v);
        return "min " + v.get(0) + " p50 " + v.get(v.size() / 2) + " max " + v.get(v.size() - 1);
    }

    private static Message delayMessage(String topic, String body, String tag, long deliverAtMs, Map<String, String> props) {
        MessageBuilder b = PROVIDER.newMessageBuilder().setTopic(topic).setBody(body.getBytes(StandardCharsets.UTF_8))
            .setTag(tag).setDeliveryTimestamp(deliverAtMs);
        if (props != null) {
            props.forEach(b::addProperty);
        }
        return b.build();
    }

    /**
     * DELAY messages due 1..4 s after sending (mixed order, millisecond timestamps) must never be delivered
     * before their delivery timestamp, and all must arrive. PASS detail: lateness quantiles.
     */
    static void delay() throws Exception {
        String t = topic("delay");
        int n = 10;
        try (SimpleConsumer c = simple("delay", t, "delay")) {
            Map<String, Long> due = new HashMap<>();
            long base = System.currentTimeMillis();
            for (int i = 0; i < n; i++) {
                long at = base + 1000 + (i * 337L) % 3000;
                SendReceipt r = producer.send(delayMessage(t, "delay " + RUN + " " + i, "delay", at,
                    Map.of("seq", Integer.toString(i))));
                due.put(r.getMessageId().toString(), at);
            }
            check(due.size() == n, "duplicate message ids in send receipts");
            Map<String, Long> late = new HashMap<>();
            List<String> problems = new ArrayList<>();
            long end = Collections.max(due.values()) + 30_000;
            while (late.size() < n && System.currentTimeMillis() < end) {
                List<MessageView> got = receive(c, 32, INVISIBLE);
                long now = System.currentTimeMillis();
                for (MessageView m : got) {
                    c.ack(m);
                    String id = m.getMessageId().toString();
                    if (!due.containsKey(id)) {
                        problems.add("unexpected message " + id);
                    } else if (late.containsKey(id)) {
                        problems.add(id + " delivered twice");
                    } else {
                        long l = now - due.get(id);
                        late.put(id, l);
                        if (l < -EARLY_SLACK_MS) {
                            problems.add("seq " + m.getProperties().get("seq") + " delivered " + -l
                                + " ms before its delivery timestamp");
                        }
                    }
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            check(late.size() == n, (n - late.size()) + " of " + n
                + " DELAY messages never delivered (30 s past the last due time)");
            passDetail = "lateness ms " + quantiles(new ArrayList<>(late.values())) + " (n=" + n + ")";
        }
    }

    /**
     * A DELAY message recalled with the send receipt's recall handle is never delivered; a second one due at
     * the same time, not recalled, is.
     */
    static void recall() throws Exception {
        String t = topic("delay");
        try (SimpleConsumer c = simple("recall", t, "recall")) {
            long at = System.currentTimeMillis() + 3000;
            SendReceipt r1 = producer.send(delayMessage(t, "recall me " + RUN, "recall", at, null));
            String handle = r1.getRecallHandle();
            check(handle != null && !handle.isEmpty(), "the send receipt of a DELAY message has no recall handle");
            RecallReceipt rr = producer.recallMessage(t, handle);
            String id1 = r1.getMessageId().toString();
            String recalled = rr == null || rr.getMessageId() == null ? "" : rr.getMessageId().toString();
            check(recalled.isEmpty() || recalled.equals(id1), "RecallMessage answered message id " + recalled
                + ", recalled " + id1);
            String id2 = producer.send(delayMessage(t, "keep me " + RUN, "recall", at, null)).getMessageId().toString();
            Map<String, Long> got = new HashMap<>();
            while (System.currentTimeMillis() < at + 30_000
                && (System.currentTimeMillis() < at + 2000 || !got.containsKey(id2))) {
                List<MessageView> batch = receive(c, 32, INVISIBLE);
                long now = System.currentTimeMillis();
                for (MessageView m : batch) {
                    c.ack(m);
                    got.putIfAbsent(m.getMessageId().toString(), now);
                }
            }
            check(!got.containsKey(id1), "the recalled message was delivered");
            check(got.containsKey(id2), "the message that was not recalled never arrived (30 s past its due time)");
            check(got.size() == 1, "unexpected messages " + got.keySet());
            passDetail = String.format("recalled one absent until %.1f s past due; kept one %d ms late",
                (System.currentTimeMillis() - at) / 1000.0, got.get(id2) - at);
        }
    }

    /**
     * Three half messages: one committed by the client, one rolled back, one left for the server's check-back
     * (the checker commits it). Nothing is visible before its commit; the committed and the checked-back one
     * arrive exactly once; the rolled-back one never does. The checker answers COMMIT the first time it is asked
     * about the unresolved one and UNKNOWN otherwise: the scenario resolves the other two itself, and the
     * reference broker asks again about a message already committed through a check-back and would deliver it
     * once per COMMIT. PASS detail: check-back latency.
     */
    static void transaction() throws Exception {
        String t = topic("tx");
        Map<String, String> roles = new ConcurrentHashMap<>();
        List<Object[]> calls = new CopyOnWriteArrayList<>(); // {message id, role, time ms}
        Producer txp = PROVIDER.newProducerBuilder()
            .setClientConfiguration(config())
            .setTopics(t)
            .setTransactionChecker(view -> {
                String id = view.getMessageId().toString();
                String role = roles.get(id);
                boolean first = calls.stream().noneMatch(call -> id.equals(call[0]));
                calls.add(new Object[] {id, role, System.currentTimeMillis()});
                return "unresolved".equals(role) && first ? TransactionResolution.COMMIT : TransactionResolution.UNKNOWN;
            })
            .build();
        try (Producer p = txp; SimpleConsumer c = simple("tx", t, "*")) {
            Map<String, String> idOf = new LinkedHashMap<>();
            Map<String, Long> sentAt = new HashMap<>();
            Map<String, Transaction> txs = new HashMap<>();
            for (String role : List.of("commit", "rollback", "unresolved")) {
                Transaction tx = p.beginTransaction();
                SendReceipt r = p.send(message(t, ("tx " + RUN + " " + role).getBytes(StandardCharsets.UTF_8), "tx",
                    null, Map.of("role", role), null), tx);
                String id = r.getMessageId().toString();
                roles.put(id, role);
                idOf.put(role, id);
                sentAt.put(role, System.currentTimeMillis());
                txs.put(role, tx);
            }
            Map<String, Integer> seen = new HashMap<>();
            List<String> problems = new ArrayList<>();
            // Before anything is committed: at least one full receive and 3 s, nothing but a checked-back message.
            long t0 = System.currentTimeMillis();
            int rounds = 0;
            while (rounds == 0 || System.currentTimeMillis() - t0 < 3000) {
                rounds++;
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    txTake(c, m, false, roles, calls, seen, problems);
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            txs.get("commit").commit();
            txs.get("rollback").rollback();
            long end = System.currentTimeMillis() + TX_WINDOW_MS;
            while (System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    txTake(c, m, true, roles, calls, seen, problems);
                }
            }
            check(problems.isEmpty(), String.join("; ", problems.subList(0, Math.min(10, problems.size()))));
            Long asked = null;
            int askedTimes = 0;
            Set<String> others = new TreeSet<>();
            for (Object[] call : calls) {
                if ("unresolved".equals(call[1])) {
                    asked = asked == null ? (Long) call[2] : Math.min(asked, (Long) call[2]);
                    askedTimes++;
                } else {
                    others.add(String.valueOf(call[1]));
                }
            }
            check(asked != null, "the checker was never asked about the unresolved half message (calls: "
                + calls.size() + ")");
            Map<String, Integer> counts = new LinkedHashMap<>();
            idOf.forEach((role, id) -> counts.put(role, seen.getOrDefault(id, 0)));
            check(counts.equals(Map.of("commit", 1, "rollback", 0, "unresolved", 1)),
                "deliveries per half message: " + counts);
            passDetail = "check-back after " + (asked - sentAt.get("unresolved")) + " ms; asked " + askedTimes
                + "x about the unresolved one"
                + (others.isEmpty() ? "" : ", also about " + String.join(",", others) + " (answered unknown)");
        }
    }

    private static void txTake(SimpleConsumer c, MessageView m, boolean committed, Map<String, String> roles,
                               List<Object[]> calls, Map<String, Integer> seen, List<String> problems)
        throws ClientException {
        String id = m.getMessageId().toString();
        String role = roles.get(id);
        seen.merge(id, 1, Integer::sum);
        c.ack(m);
        if (role == null) {
            problems.add("unexpected message " + id);
        } else if (role.equals("rollback")) {
            problems.add("the rolled-back half message was delivered");
        } else if (role.equals("commit") && !committed) {
            problems.add("the half message was delivered before commit()");
        } else if (role.equals("unresolved") && calls.stream().noneMatch(call -> id.equals(call[0]))) {
            problems.add("the unresolved half message was delivered before the checker was asked");
        }
    }

    /**
     * One queue, no consumer yet: messages with priorities [1,5,3,5,9,1] come out highest priority first,
     * equal priorities in send order.
     */
    static void priority() throws Exception {
        String reason = unsupported("priority");
        if (reason != null && !reason.isEmpty()) {
            throw new Skipped(reason);
        }
        String t = topic("priority");
        int[] prios = {1, 5, 3, 5, 9, 1};
        Map<String, String> label = new HashMap<>();
        List<Object[]> sent = new ArrayList<>(); // {id, seq, priority}
        for (int i = 0; i < prios.length; i++) {
            Message m = PROVIDER.newMessageBuilder().setTopic(t)
                .setBody(("prio " + RUN + " " + i).getBytes(StandardCharsets.UTF_8)).setTag("prio")
                .addProperty("seq", Integer.toString(i)).setPriority(prios[i]).build();
            String id = producer.send(m).getMessageId().toString();
            label.put(id, "p" + prios[i] + "#" + i);
            sent.add(new Object[] {id, i, prios[i]});
        }
        List<String> want = new ArrayList<>();
        // List.sort is stable: equal priorities keep send order.
        sent.sort(Comparator.comparingInt(s -> -(Integer) s[2]));
        sent.forEach(s -> want.add((String) s[0]));
        try (SimpleConsumer c = simple("priority", t, "*")) {
            List<String> order = new ArrayList<>();
            long end = System.currentTimeMillis() + 60_000;
            while (order.size() < prios.length && System.currentTimeMillis() < end) {
                for (MessageView m : receive(c, 32, INVISIBLE)) {
                    order.add(m.getMessageId().toString());
                    c.ack(m);
                }
            }
            for (MessageView m : receive(c, 32, INVISIBLE)) { // nothing more
                order.add(m.getMessageId().toString());
                c.ack(m);
            }
            List<String> shown = new ArrayList<>();
            order.forEach(id -> shown.add(label.getOrDefault(id, id)));
            List<String> wanted = new ArrayList<>();
            want.forEach(id -> wanted.add(label.get(id)));
            check(order.equals(want), "delivered " + String.join(" ", shown) + "; want " + String.join(" ", wanted));
            passDetail = "order " + String.join(" ", shown);
        }
    }

    private static byte[] randomBytes(int n) {
        byte[] b = new byte[n];
        ThreadLocalRandom.current().nextBytes(b);
        return b;
    }

    // ---- runner ---------------------------------------------------------------------------------------------

    private static void report(String name, String verdict, String detail) {
        String d = detail == null ? "" : detail.replaceAll("\\s+", " ").trim();
        if (d.length() > 300) {
            d = d.substring(0, 300);
        }
        String line = ("java " + name + " " + verdict + " " + d).trim();
        System.out.println("SCENARIO " + line);
        System.out.flush();
        if (verdict.equals("FAIL")) {
            failures++;
        } else if (verdict.equals("SKIP")) {
            skipped++;
        }
        String path = System.getenv("FERROMQ_RESULTS_FILE");
        if (path != null && !path.isEmpty()) {
            try (FileWriter w = new FileWriter(path, StandardCharsets.UTF_8, true)) {
                w.write(line + "\n");
            } catch (IOException e) {
                System.err.println("cannot write results: " + e);
            }
        }
    }

    private static void run(String name, Scenario s) {
        if (!ONLY.contains("") && !ONLY.contains(name)) {
            return;
        }
        long t0 = System.currentTimeMillis();
        passDetail = "";
        try {
            s.run();
            report(name, "PASS", passDetail);
        } catch (Skipped k) {
            report(name, "SKIP", k.getMessage());
        } catch (Failed f) {
            report(name, "FAIL", f.getMessage());
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            report(name, "FAIL", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        System.out.printf("  %s took %.1f s%n", name, (System.currentTimeMillis() - t0) / 1000.0);
    }

    public static void main(String[] args) throws Exception {
        System.out.println("java client scenarios against " + ENDPOINT + " (run " + RUN + ")");
        try {
            producer = PROVIDER.newProducerBuilder()
                .setClientConfiguration(config())
                .setTopics(topic("normal"), topic("filter"), topic("retry"), topic("push"), topic("pushretry"), topic("fifo"),
                    topic("dlq"))
                .build();
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            for (String s : SCENARIOS) {
                report(s, "FAIL", "producer start failed: " + e);
            }
            System.exit(1);
        }
        run("send_receive_ack", Scenarios::sendReceiveAck);
        run("tag_filter", Scenarios::tagFilter);
        run("sql_filter", Scenarios::sqlFilter);
        run("redelivery", Scenarios::redelivery);
        run("fifo_order", Scenarios::fifoOrder);
        run("dead_letter", Scenarios::deadLetter);
        run("push_consume", Scenarios::pushConsume);
        run("push_retry", Scenarios::pushRetry);
        run("unknown_topic", Scenarios::unknownTopic);
        run("oversized_body", Scenarios::oversizedBody);
        run("delay", Scenarios::delay);
        run("recall", Scenarios::recall);
        run("transaction", Scenarios::transaction);
        run("priority", Scenarios::priority);
        try {
            producer.close();
        } catch (Throwable e) {
            System.out.println("producer close failed: " + e);
        }
        System.out.println("java: " + (SCENARIOS.size() - failures - skipped) + " passed, " + failures + " failed, "
            + skipped + " skipped");
        System.exit(failures == 0 ? 0 : 1);
    }
}
