package io.ferromq.tests.remoting;

import java.io.FileWriter;
import java.io.IOException;

/**
 * Verdict lines shared by the scenario programs: {@code SCENARIO <client> <name> PASS|FAIL|SKIP <detail>}
 * on stdout, and the same line without the prefix appended to FERROMQ_RESULTS_FILE (run.sh counts them).
 */
final class Results {
    private static int failures;

    private Results() {
    }

    static String env(String k, String dflt) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static void report(String client, String name, String verdict, String detail) {
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

    /** Exit code for the program: 0 only if nothing failed. */
    static int exitCode() {
        return failures == 0 ? 0 : 1;
    }
}
