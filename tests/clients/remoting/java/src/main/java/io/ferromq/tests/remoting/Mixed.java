package io.ferromq.tests.remoting;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * Mixed-protocol scenarios: messages sent with the 4.x remoting client are received with the 5.x
 * gRPC client, and the reverse, with id, tag, keys, properties and body intact.
 * Prints {@code SCENARIO mixed <name> PASS|FAIL <detail>} and appends to FERROMQ_RESULTS_FILE.
 */
public final class Mixed {
    private static final String NAMESRV = Results.env("FERROMQ_NAMESRV", "127.0.0.1:9876");
    private static final String ENDPOINT = Results.env("FERROMQ_ENDPOINT", "127.0.0.1:8081");
    private static final String T = Results.env("FERROMQ_TOPIC_PREFIX", "mx");
    private static final String G = Results.env("FERROMQ_GROUP_PREFIX", "mx_g");
    private static final String RUN = UUID.randomUUID().toString().substring(0, 8);
    private static final ClientServiceProvider PROVIDER = ClientServiceProvider.loadService();


    private static void report(String name, String verdict, String detail) {
        Results.report("mixed", name, verdict, detail);
    }

    private static ClientConfiguration grpc() {
        return ClientConfiguration.newBuilder().setEndpoints(ENDPOINT).enableSsl(false).build();
    }

    private static String bytes(ByteBuffer b) {
        byte[] a = new byte[b.remaining()];
        b.duplicate().get(a);
        return new String(a, StandardCharsets.UTF_8);
    }

    /** 4.x DefaultMQProducer (remoting) -> 5.x SimpleConsumer (gRPC). */
    private static String remotingToGrpc() throws Exception {
        String topic = T + "_mixed4";
        SimpleConsumer consumer = PROVIDER.newSimpleConsumerBuilder().setClientConfiguration(grpc())
            .setConsumerGroup(G + "_mixed4").setAwaitDuration(Duration.ofSeconds(5))
            .setSubscriptionExpressions(Map.of(topic, FilterExpression.SUB_ALL)).build();
        Thread.sleep(1500);
        consumer.receive(16, Duration.ofSeconds(30)); // registers the group before anything is sent
        DefaultMQProducer p = new DefaultMQProducer(G + "_mixed4p");
        p.setNamesrvAddr(NAMESRV);
        p.setInstanceName("mixed4p");
        // A loaded CI box can spend seconds on the JVM's first connection: not a send failure.
        p.setSendMsgTimeout(10_000);
        p.start();
        Map<String, Message> sent = new HashMap<>();
        try {
            for (int i = 0; i < 5; i++) {
                Message m = new Message(topic, "M4", "k4a-" + i + " k4b-" + i, ("from 4.x " + i + " " + RUN).getBytes(StandardCharsets.UTF_8));
                m.putUserProperty("uni", "ünï-" + i);
                SendResult r = p.send(m);
                sent.put(r.getMsgId(), m);
            }
        } finally {
            p.shutdown();
        }
        Map<String, MessageView> got = new HashMap<>();
        long end = System.currentTimeMillis() + 60_000;
        try {
            while (got.size() < sent.size() && System.currentTimeMillis() < end) {
                for (MessageView v : consumer.receive(16, Duration.ofSeconds(30))) {
                    got.put(v.getMessageId().toString(), v);
                    consumer.ack(v);
                }
            }
        } finally {
            consumer.close();
        }
        for (Map.Entry<String, Message> e : sent.entrySet()) {
            MessageView v = got.get(e.getKey());
            if (v == null) {
                throw new IllegalStateException("4.x message " + e.getKey() + " not received over gRPC (got ids " + got.keySet() + ")");
            }
            Message m = e.getValue();
            String want = new String(m.getBody(), StandardCharsets.UTF_8);
            if (!bytes(v.getBody()).equals(want) || !"M4".equals(v.getTag().orElse(null))
                || !new ArrayList<>(v.getKeys()).equals(List.of(m.getKeys().split(" ")))
                || !m.getUserProperty("uni").equals(v.getProperties().get("uni"))) {
                throw new IllegalStateException("altered: " + e.getKey() + " tag " + v.getTag() + " keys " + v.getKeys()
                    + " props " + v.getProperties());
            }
        }
        return sent.size() + " messages: id (UNIQ_KEY), tag, 2 keys, property and body intact";
    }

    /** 5.x Producer (gRPC) -> 4.x DefaultMQPushConsumer (remoting). */
    private static String grpcToRemoting() throws Exception {
        String topic = T + "_mixed5";
        Map<String, org.apache.rocketmq.client.apis.message.Message> sent = new HashMap<>();
        try (Producer p = PROVIDER.newProducerBuilder().setClientConfiguration(grpc()).setTopics(topic).build()) {
            for (int i = 0; i < 5; i++) {
                org.apache.rocketmq.client.apis.message.Message m = PROVIDER.newMessageBuilder().setTopic(topic).setTag("M5")
                    .setKeys("k5a-" + i, "k5b-" + i).addProperty("uni", "ünï-" + i)
                    .setBody(("from 5.x " + i + " " + RUN).getBytes(StandardCharsets.UTF_8)).build();
                SendReceipt r = p.send(m);
                sent.put(r.getMessageId().toString(), m);
            }
        }
        Map<String, MessageExt> got = new ConcurrentHashMap<>();
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(G + "_mixed5");
        c.setNamesrvAddr(NAMESRV);
        c.setInstanceName("mixed5c");
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(topic, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            msgs.forEach(m -> got.put(m.getMsgId(), m));
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            long end = System.currentTimeMillis() + 60_000;
            while (got.size() < sent.size() && System.currentTimeMillis() < end) {
                Thread.sleep(200);
            }
        } finally {
            c.shutdown();
        }
        for (Map.Entry<String, org.apache.rocketmq.client.apis.message.Message> e : sent.entrySet()) {
            MessageExt m = got.get(e.getKey());
            if (m == null) {
                throw new IllegalStateException("5.x message " + e.getKey() + " not received over remoting (got ids " + got.keySet() + ")");
            }
            org.apache.rocketmq.client.apis.message.Message s = e.getValue();
            if (!new String(m.getBody(), StandardCharsets.UTF_8).equals(bytes(s.getBody())) || !"M5".equals(m.getTags())
                || !m.getKeys().equals(String.join(" ", s.getKeys()))
                || !s.getProperties().get("uni").equals(m.getUserProperty("uni"))) {
                throw new IllegalStateException("altered: " + e.getKey() + " tags " + m.getTags() + " keys " + m.getKeys()
                    + " props " + m.getProperties());
            }
        }
        return sent.size() + " messages: id, tag, 2 keys, property and body intact";
    }

    public static void main(String[] args) {
        for (String name : List.of("remoting_to_grpc", "grpc_to_remoting")) {
            try {
                report(name, "PASS", name.equals("remoting_to_grpc") ? remotingToGrpc() : grpcToRemoting());
            } catch (Throwable e) {
                e.printStackTrace(System.out);
                report(name, "FAIL", e.toString());
            }
        }
        System.exit(Results.exitCode());
    }
}
