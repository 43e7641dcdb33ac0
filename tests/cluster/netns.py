"""Network namespaces for fault-injection suites: every process gets its own namespace and its
own address on a private bridge, so a network partition between two processes is a pair of
iptables DROP rules inside one namespace, with nothing changed outside it.

Layout: a bridge `fmq<tag>` in the root namespace holds 10.213.N.1/24 (N picked free per run);
process `name` lives in namespace `fmq<tag>-<name>`, reached through a veth pair whose root end
is enslaved to the bridge, at 10.213.N.<k>. The test driver stays in the root namespace and
reaches every process through the bridge. Partitions only touch the filter tables of the
namespaces involved, so other suites and the host never see them.

Cleanup: `Net.close()` removes the namespaces (their veths and rules go with them) and the
bridge; the suite's shell trap does the same by tag (`cleanup_tag`) on every exit path, in case
the driver itself was killed.

Needs root, `ip` and `iptables` (CI runs as root).
"""
import os
import random
import shutil
import subprocess


def available():
    """Whether namespaces can be used here (root with ip and iptables)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def cleanup_tag(tag):
    """Removes every namespace and the bridge of run `tag` (ends the processes still inside)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        ns = line.split(" ", 1)[0]
        if not ns.startswith(f"fmq{tag}-"):
            continue
        for pid in sh("ip", "netns", "pids", ns, check=False).split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", f"fmq{tag}", check=False)


class Net:
    def __init__(self, tag):
        self.tag = tag
        self.bridge = f"fmq{tag}"
        used = sh("ip", "-o", "-4", "addr")
        free = [n for n in range(1, 255) if f" 10.213.{n}." not in used]
        self.subnet = f"10.213.{random.choice(free)}"
        self.hosts = {}  # process name -> (namespace, address)
        self.rules = {}  # namespace -> iptables rules in force
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        # Traffic inside the bridge skips the host's iptables (br_netfilter), so a host whose
        # FORWARD policy drops does not cut the cluster, and our rules stay in the namespaces.
        sh("ip", "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0",
           "nf_call_ip6tables", "0", "nf_call_arptables", "0", check=False)
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add(self, name):
        """Creates the namespace of process `name`; returns its address."""
        if name in self.hosts:
            return self.hosts[name][1]
        k = len(self.hosts) + 2
        ns, addr = f"fmq{self.tag}-{name}", f"{self.subnet}.{k}"
        outer, inner = f"fmq{self.tag}h{k}", f"fmq{self.tag}n{k}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "link", "set", outer, "master", self.bridge)
        sh("ip", "link", "set", outer, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "name", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        self.hosts[name] = (ns, addr)
        return addr

    def prefix(self, name):
        """The command prefix that runs a program inside `name`'s namespace (`ip netns exec`
        execs in place: the process id is the program's own, so signals reach it)."""
        return ["ip", "netns", "exec", self.hosts[name][0]]

    def addr(self, name):
        return self.hosts[name][1]

    def cut(self, a, b, direction="both"):
        """Drops traffic between processes a and b, inside a's namespace: `both` directions,
        only `out` (a to b) or only `in` (b to a). Established connections stall as well."""
        ns, peer = self.hosts[a][0], self.hosts[b][1]
        rules = []
        if direction in ("both", "out"):
            rules.append(["OUTPUT", "-d", peer, "-j", "DROP"])
        if direction in ("both", "in"):
            rules.append(["INPUT", "-s", peer, "-j", "DROP"])
        for r in rules:
            sh("ip", "netns", "exec", ns, "iptables", "-w", "-I", *r)
            self.rules.setdefault(ns, []).append(r)

    def heal(self):
        """Removes every partition."""
        for ns, rules in self.rules.items():
            for r in rules:
                sh("ip", "netns", "exec", ns, "iptables", "-w", "-D", *r, check=False)
        self.rules = {}

    def close(self):
        cleanup_tag(self.tag)
