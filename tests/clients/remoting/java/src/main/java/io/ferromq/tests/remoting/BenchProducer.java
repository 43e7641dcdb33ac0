package io.ferromq.tests.remoting;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;

/**
 * Producer load for tests/bench/compare, the same for both protocols so that they compare: one
 * producer, several threads each sending synchronously in a closed loop (as RocketMQ's own
 * benchmark producer does). FERROMQ_PROTOCOL=remoting (default) uses the classic 4.x
 * {@code DefaultMQProducer} (rocketmq-client 4.9.8) against FERROMQ_NAMESRV; =grpc the RocketMQ 5
 * {@code Producer} (rocketmq-client-java 5.2.0) against FERROMQ_ENDPOINT. Sends of the warm-up
 * are not counted; the latency of each measured send is from the call to its return.
 *
 * <p>Environment: FERROMQ_PROTOCOL, FERROMQ_NAMESRV, FERROMQ_ENDPOINT, FERROMQ_TOPIC,
 * FERROMQ_SIZE (bytes), FERROMQ_THREADS, FERROMQ_WARMUP (s), FERROMQ_SECONDS. Prints one JSON
 * line: messages, msgs_per_sec, latency_ms {mean, p50, p99, p999, max}, failed, tool.
 */
public final class BenchProducer {
    private BenchProducer() {
    }

    /** One synchronous send; true when the server accepted it. */
    interface Sender {
        boolean send() throws Exception;
    }

    /** A started producer of either protocol. */
    interface Client extends Sender, AutoCloseable {
    }

    private static Client remoting(String topic, byte[] body) throws Exception {
        DefaultMQProducer producer = new DefaultMQProducer("bench4x_producer");
        producer.setNamesrvAddr(Results.env("FERROMQ_NAMESRV", "127.0.0.1:9876"));
        producer.setInstanceName("bench4x");
        producer.setSendMsgTimeout(10_000);
        producer.start();
        return new Client() {
            @Override
            public boolean send() throws Exception {
                SendResult r = producer.send(new Message(topic, "B", body));
                return r.getSendStatus() == SendStatus.SEND_OK;
            }

            @Override
            public void close() {
                producer.shutdown();
            }
        };
    }

    private static Client grpc(String topic, byte[] body) throws Exception {
        ClientServiceProvider provider = ClientServiceProvider.loadService();
        ClientConfiguration cfg = ClientConfiguration.newBuilder()
            .setEndpoints(Results.env("FERROMQ_ENDPOINT", "127.0.0.1:8081")).enableSsl(false).build();
        Producer producer = provider.newProducerBuilder().setClientConfiguration(cfg).setTopics(topic).build();
        return new Client() {
            @Override
            public boolean send() throws Exception {
                producer.send(provider.newMessageBuilder().setTopic(topic).setTag("B").setBody(body).build());
                return true;
            }

            @Override
            public void close() throws Exception {
                producer.close();
            }
        };
    }

    /** Latencies of one thread, in nanoseconds. */
    static final class Samples {
        long[] v = new long[1 << 16];
        int n;

        void add(long ns) {
            if (n == v.length) {
                v = Arrays.copyOf(v, n * 2);
            }
            v[n++] = ns;
        }
    }

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable t) {
            // The clients' threads would keep the JVM alive: fail now.
            t.printStackTrace();
            System.exit(1);
        }
    }

    private static void run() throws Exception {
        String protocol = Results.env("FERROMQ_PROTOCOL", "remoting");
        String topic = Results.env("FERROMQ_TOPIC", "bench4x");
        int size = Integer.parseInt(Results.env("FERROMQ_SIZE", "1024"));
        int threads = Integer.parseInt(Results.env("FERROMQ_THREADS", "32"));
        long warmup = Long.parseLong(Results.env("FERROMQ_WARMUP", "3")) * 1_000_000_000L;
        long measure = Long.parseLong(Results.env("FERROMQ_SECONDS", "10")) * 1_000_000_000L;
        byte[] body = new byte[size];
        for (int i = 0; i < size; i++) {
            body[i] = (byte) ('a' + i % 26);
        }
        String tool = protocol.equals("grpc")
            ? "rocketmq-client-java 5.2.0 Producer (gRPC)"
            : "rocketmq-client 4.9.8 DefaultMQProducer (remoting)";
        Client producer = protocol.equals("grpc") ? grpc(topic, body) : remoting(topic, body);
        // The route is fetched and the connection opened before the clock starts (a topic just
        // created through a proxy is routable once the broker's next report reached it).
        long routeDeadline = System.nanoTime() + 60_000_000_000L;
        while (true) {
            try {
                if (producer.send()) {
                    break;
                }
            } catch (Exception e) {
                if (System.nanoTime() > routeDeadline) {
                    throw e;
                }
            }
            Thread.sleep(500);
        }

        Samples[] samples = new Samples[threads];
        AtomicLong failed = new AtomicLong();
        long start = System.nanoTime();
        long from = start + warmup;
        long until = from + measure;
        Thread[] workers = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            Samples s = new Samples();
            samples[t] = s;
            workers[t] = new Thread(() -> {
                while (true) {
                    long t0 = System.nanoTime();
                    if (t0 >= until) {
                        return;
                    }
                    boolean ok;
                    try {
                        ok = producer.send();
                    } catch (Exception e) {
                        ok = false;
                    }
                    long t1 = System.nanoTime();
                    if (t0 >= from) {
                        if (ok) {
                            s.add(t1 - t0);
                        } else {
                            failed.incrementAndGet();
                        }
                    }
                }
            }, "bench-" + t);
            workers[t].start();
        }
        for (Thread w : workers) {
            w.join();
        }
        producer.close();

        int total = 0;
        for (Samples s : samples) {
            total += s.n;
        }
        long[] all = new long[total];
        int k = 0;
        double sum = 0;
        for (Samples s : samples) {
            System.arraycopy(s.v, 0, all, k, s.n);
            k += s.n;
            for (int i = 0; i < s.n; i++) {
                sum += s.v[i];
            }
        }
        Arrays.sort(all);
        double secs = measure / 1e9;
        String json = String.format(Locale.ROOT,
            "{\"messages\":%d,\"msgs_per_sec\":%.1f,\"failed\":%d,\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,"
                + "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},\"tool\":\"%s, sync sends, %d threads\"}",
            total, total / secs, failed.get(), total == 0 ? 0 : sum / total / 1e6, pct(all, 0.5), pct(all, 0.99),
            pct(all, 0.999), total == 0 ? 0 : all[total - 1] / 1e6, tool, threads);
        System.out.println(new String(json.getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8));
        System.exit(0);
    }

    private static double pct(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int i = (int) Math.min(sorted.length - 1, Math.floor(q * sorted.length));
        return sorted[i] / 1e6;
    }
}
