package io.ferromq.tests.remoting;

import java.io.FileWriter;
import java.io.IOException;

/**
 * Shared by every Java program of the remoting harness (java/ and admin/ add this directory as a
 * source root). Verdict lines: {@code SCENARIO <client> <name> PASS|FAIL|SKIP <detail>}
 * on stdout, and the same line without the prefix appended to FERROMQ_RESULTS_FILE (run.sh counts them).
 */
public final class Results {
    private static int failures;

    private Results() {
    }

    public static String env(String k, String dflt) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? dflt : v;
    }

    public static void report(String client, String name, String verdict, String detail) {
        String line = client + " " + name + " " + verdict + " " + detail.replace('\n', ' ');
        System.out.println("SCENARIO " + line);
        if (verdict.equals("FAIL")) {
            failures++;
        }
        String path = System.getenv("FERROMQ_RESULTS_FILE");
        if (path != null) {
            try (FileWriter w = new FileWriter(path, true)) {
                w.write(line + "\n");
            } catch (IOException e) {
                System.out.println("cannot write results: " + e);
            }
        }
    }

    /** An assertion failure inside a scenario: reported as FAIL with its message. */
    public static final class Failed extends RuntimeException {
        public Failed(String msg) {
            super(msg);
        }
    }

    public static void check(boolean ok, String what) {
        if (!ok) {
            throw new Failed(what);
        }
    }

    /** Exit code for the program: 0 only if nothing failed. */
    public static int exitCode() {
        return failures == 0 ? 0 : 1;
    }
}
