package io.ferromq.tests;

import java.io.FileWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.SessionCredentialsProvider;
import org.apache.rocketmq.client.apis.StaticSessionCredentialsProvider;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.java.exception.ForbiddenException;
import org.apache.rocketmq.client.java.exception.UnauthorizedException;

/**
 * Authentication and authorization scenarios with the official Java client (rocketmq-client-java), run by
 * tests/suites/35-auth.sh against `ferromq standalone --auth`: right, wrong and absent credentials, and a topic or
 * group the user's policy does not cover. Env: FERROMQ_ENDPOINT, FERROMQ_AUTH_AK / FERROMQ_AUTH_SK (a normal user),
 * FERROMQ_AUTH_TOPIC_{OK,DENIED,OTHER}, FERROMQ_AUTH_GROUP_{OK,OTHER}, FERROMQ_RESULTS_FILE.
 * The Java client raises UnauthorizedException for 40100 and ForbiddenException for 40300.
 */
public final class Auth {
    private static final ClientServiceProvider PROVIDER = ClientServiceProvider.loadService();
    private static final String ENDPOINT = System.getenv("FERROMQ_ENDPOINT");
    private static final String AK = System.getenv("FERROMQ_AUTH_AK");
    private static final String SK = System.getenv("FERROMQ_AUTH_SK");
    private static final int SENT_OK = 3;
    private static int failures;

    interface Call {
        void run() throws Exception;
    }

    private static String env(String k) {
        String v = System.getenv(k);
        return v == null ? "" : v;
    }

    private static ClientConfiguration config(String ak, String sk) {
        org.apache.rocketmq.client.apis.ClientConfigurationBuilder b = ClientConfiguration.newBuilder()
            .setEndpoints(ENDPOINT)
            .enableSsl(false)
            .setRequestTimeout(Duration.ofSeconds(10));
        if (ak != null) {
            SessionCredentialsProvider p = new StaticSessionCredentialsProvider(ak, sk);
            b.setCredentialProvider(p);
        }
        return b.build();
    }

    private static void report(String name, boolean ok, String detail) {
        String d = detail == null ? "" : detail.replaceAll("\\s+", " ").trim();
        if (d.length() > 300) {
            d = d.substring(0, 300);
        }
        String line = ("java " + name + " " + (ok ? "PASS" : "FAIL") + " " + d).trim();
        System.out.println("SCENARIO " + line);
        System.out.flush();
        if (!ok) {
            failures++;
        }
        String path = System.getenv("FERROMQ_RESULTS_FILE");
        if (path != null && !path.isEmpty()) {
            try (FileWriter w = new FileWriter(path, StandardCharsets.UTF_8, true)) {
                w.write(line + "\n");
            } catch (IOException e) {
                System.out.println("cannot write results: " + e);
            }
        }
    }

    /** The call must fail with an exception of `want` somewhere in its cause chain. */
    private static void expect(String name, Class<? extends ClientException> want, Call call) {
        try {
            call.run();
            report(name, false, "not refused");
        } catch (Throwable t) {
            for (Throwable c = t; c != null; c = c.getCause()) {
                if (want.isInstance(c)) {
                    report(name, true, want.getSimpleName());
                    return;
                }
            }
            report(name, false, "refused with " + t + " (want " + want.getSimpleName() + ")");
        }
    }

    private static void send(String ak, String sk, String topic) throws Exception {
        try (Producer p = PROVIDER.newProducerBuilder()
            .setClientConfiguration(config(ak, sk))
            .setTopics(topic)
            .build()) {
            p.send(PROVIDER.newMessageBuilder().setTopic(topic).setTag("auth")
                .setBody("should not be stored".getBytes(StandardCharsets.UTF_8)).build());
        }
    }

    private static SimpleConsumer consumer(String group, String topic) throws ClientException {
        return PROVIDER.newSimpleConsumerBuilder()
            .setClientConfiguration(config(AK, SK))
            .setConsumerGroup(group)
            .setAwaitDuration(Duration.ofSeconds(5))
            .setSubscriptionExpressions(Collections.singletonMap(topic, new FilterExpression("*")))
            .build();
    }

    private static void rightCredentials(String topic, String group) {
        try {
            Set<String> ids = new HashSet<>();
            try (Producer p = PROVIDER.newProducerBuilder()
                .setClientConfiguration(config(AK, SK)).setTopics(topic).build()) {
                for (int i = 0; i < SENT_OK; i++) {
                    ids.add(p.send(PROVIDER.newMessageBuilder().setTopic(topic).setTag("auth")
                        .setBody(("auth " + i).getBytes(StandardCharsets.UTF_8)).build()).getMessageId().toString());
                }
            }
            Set<String> got = new HashSet<>();
            try (SimpleConsumer c = consumer(group, topic)) {
                long end = System.currentTimeMillis() + 30_000;
                while (!got.containsAll(ids) && System.currentTimeMillis() < end) {
                    List<MessageView> batch = c.receive(16, Duration.ofSeconds(30));
                    for (MessageView m : batch) {
                        c.ack(m);
                        got.add(m.getMessageId().toString());
                    }
                }
            }
            got.retainAll(ids);
            report("auth_right_credentials", got.size() == ids.size(),
                "sent " + ids.size() + ", received and acked " + got.size());
        } catch (Exception e) {
            report("auth_right_credentials", false, e.toString());
        }
    }

    public static void main(String[] args) {
        String ok = env("FERROMQ_AUTH_TOPIC_OK");
        rightCredentials(ok, env("FERROMQ_AUTH_GROUP_OK"));
        expect("auth_wrong_secret", UnauthorizedException.class, () -> send(AK, SK + "x", ok));
        expect("auth_unknown_user", UnauthorizedException.class, () -> send("nobody", SK, ok));
        expect("auth_no_credentials", UnauthorizedException.class, () -> send(null, null, ok));
        expect("auth_forbidden_topic", ForbiddenException.class, () -> send(AK, SK, env("FERROMQ_AUTH_TOPIC_OTHER")));
        expect("auth_deny_beats_allow", ForbiddenException.class,
            () -> send(AK, SK, env("FERROMQ_AUTH_TOPIC_DENIED")));
        expect("auth_forbidden_group", ForbiddenException.class, () -> {
            try (SimpleConsumer c = consumer(env("FERROMQ_AUTH_GROUP_OTHER"), ok)) {
                c.receive(16, Duration.ofSeconds(30));
            }
        });
        System.exit(failures == 0 ? 0 : 1);
    }
}
