package io.ferromq.tests;

import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;

/**
 * Load for the fault-injection suite (tests/chaos/replication_test.py), driven by the official
 * RocketMQ 5 Java client. It runs until the file FERROMQ_LOAD_STOP exists and reports every
 * outcome on stdout, one line each, for the suite's checker:
 *
 * <ul>
 *   <li>{@code FERROMQ_LOAD_ROLE=producer} (default): sends one message at a time to
 *       FERROMQ_LOAD_TOPIC; the body is {@code <tag>:<run>:<i>:} then 200 + i % 800 bytes of
 *       {@code (i * 31 + j) % 256}, the scheme the suite recomputes. Prints {@code ACK <message id> <i>}
 *       for each acknowledged send and {@code ERR <i> <error>} for each failed one.
 *   <li>{@code FERROMQ_LOAD_ROLE=consumer}: a SimpleConsumer in group FERROMQ_LOAD_GROUP receives
 *       and acks; prints {@code GOT <message id> <sha-256 of the body hex> <tag> <i>} per delivery
 *       and {@code ACKFAIL <message id>} when an ack fails (the message comes back).
 * </ul>
 *
 * FERROMQ_ENDPOINT lists the proxies, comma or semicolon separated.
 */
public final class Load {
    private static final ClientServiceProvider PROVIDER = ClientServiceProvider.loadService();

    private Load() {}

    private static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    public static void main(String[] args) throws Exception {
        String endpoints = env("FERROMQ_ENDPOINT", "127.0.0.1:8081").replace(',', ';');
        ClientConfiguration cfg = ClientConfiguration.newBuilder().setEndpoints(endpoints).enableSsl(false)
            .setRequestTimeout(Duration.ofSeconds(5)).build();
        String topic = env("FERROMQ_LOAD_TOPIC", "");
        Path stop = Path.of(env("FERROMQ_LOAD_STOP", "/nonexistent/stop"));
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        if (env("FERROMQ_LOAD_ROLE", "producer").equals("consumer")) {
            consume(cfg, topic, stop, out);
        } else {
            produce(cfg, topic, stop, out);
        }
        out.flush();
        System.exit(0);
    }

    private static void produce(ClientConfiguration cfg, String topic, Path stop, PrintStream out) throws Exception {
        String tag = env("FERROMQ_LOAD_TAG", "java-load");
        String run = env("FERROMQ_LOAD_RUN", "run");
        try (Producer producer = PROVIDER.newProducerBuilder().setClientConfiguration(cfg).setTopics(topic).build()) {
            for (int i = 0; !Files.exists(stop); i++) {
                byte[] head = (tag + ":" + run + ":" + i + ":").getBytes(StandardCharsets.UTF_8);
                int n = 200 + i % 800;
                ByteBuffer body = ByteBuffer.allocate(head.length + n).put(head);
                for (int j = 0; j < n; j++) {
                    body.put((byte) ((i * 31 + j) % 256));
                }
                Message m = PROVIDER.newMessageBuilder().setTopic(topic).setBody(body.array()).build();
                try {
                    SendReceipt r = producer.send(m);
                    out.println("ACK " + r.getMessageId() + " " + i);
                } catch (Exception e) {
                    out.println("ERR " + i + " " + String.valueOf(e.getMessage()).replace('\n', ' '));
                    Thread.sleep(50);
                }
                out.flush();
            }
        }
    }

    private static void consume(ClientConfiguration cfg, String topic, Path stop, PrintStream out) throws Exception {
        String group = env("FERROMQ_LOAD_GROUP", "java_load");
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        try (SimpleConsumer c = PROVIDER.newSimpleConsumerBuilder().setClientConfiguration(cfg)
                .setConsumerGroup(group).setAwaitDuration(Duration.ofSeconds(5))
                .setSubscriptionExpressions(Collections.singletonMap(topic, FilterExpression.SUB_ALL)).build()) {
            while (!Files.exists(stop)) {
                List<MessageView> got;
                try {
                    got = c.receive(32, Duration.ofSeconds(15));
                } catch (Exception e) {
                    Thread.sleep(500);
                    continue;
                }
                for (MessageView m : got) {
                    ByteBuffer b = m.getBody();
                    byte[] bytes = new byte[b.remaining()];
                    b.get(bytes);
                    String[] parts = new String(bytes, 0, Math.min(bytes.length, 64), StandardCharsets.ISO_8859_1)
                        .split(":", 4);
                    String origin = parts.length >= 3 ? parts[0] + " " + parts[2] : "? -1";
                    out.println("GOT " + m.getMessageId() + " " + HexFormat.of().formatHex(sha.digest(bytes)) + " "
                        + origin);
                    out.flush();
                    try {
                        c.ack(m);
                    } catch (Exception e) {
                        out.println("ACKFAIL " + m.getMessageId());
                        out.flush();
                    }
                }
            }
        }
    }
}
