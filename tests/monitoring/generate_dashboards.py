"""Writes the chart's Grafana dashboards (charts/ferromq/dashboards/*.json).

    python3 tests/monitoring/generate_dashboards.py charts/ferromq/dashboards

The JSON files are generated: edit this file and run it again (suite 70 fails when the committed
files differ from what it writes). Queries use the RocketMQ 5 metric names where RocketMQ has one
and FerroMQ's own elsewhere; broker/server/tests/metrics_contract.rs checks every metric and
label they name against a real scrape.
"""
import json, sys
out = sys.argv[1]

def ds():
    return {"type": "prometheus", "uid": "${datasource}"}

SEL = 'namespace=~"$namespace",cluster=~"$cluster"'

def target(expr, legend, ref):
    return {"datasource": ds(), "expr": expr, "legendFormat": legend, "refId": ref, "range": True}

class Board:
    def __init__(self, uid, title, desc, extra_vars=()):
        self.uid, self.title, self.desc = uid, title, desc
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.vars = [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "options": []},
            self.query_var("namespace", "Namespace", "label_values(ferromq_build_info, namespace)"),
            self.query_var("cluster", "Cluster", 'label_values(ferromq_build_info{namespace=~"$namespace"}, cluster)'),
        ] + [self.query_var(*v) for v in extra_vars]

    @staticmethod
    def query_var(name, label, query):
        return {"name": name, "label": label, "type": "query", "datasource": ds(),
                "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0,
                "options": [], "sort": 1, "regex": ""}

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "id": len(self.panels) + 1})
        self.y += 1

    def panel(self, kind, title, desc, exprs, unit="short", w=12, h=8, **extra):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        refs = "ABCDEFGH"
        p = {"type": kind, "title": title, "description": desc, "datasource": ds(),
             "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}, "id": len(self.panels) + 1,
             "targets": [target(e, l, refs[i]) for i, (e, l) in enumerate(exprs)],
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        p.update(extra)
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def write(self):
        d = {"uid": self.uid, "title": self.title, "description": self.desc,
             "tags": ["ferromq", "rocketmq"], "timezone": "browser", "schemaVersion": 39,
             "version": 1, "editable": True, "graphTooltip": 1, "refresh": "30s",
             "time": {"from": "now-1h", "to": "now"}, "annotations": {"list": []},
             "links": [{"type": "dashboards", "tags": ["ferromq"], "asDropdown": True, "title": "FerroMQ",
                        "includeVars": True, "keepTime": True}],
             "templating": {"list": self.vars}, "panels": self.panels}
        with open(f"{out}/{self.uid}.json", "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")

R = "$__rate_interval"

# --- cluster overview
b = Board("ferromq-overview", "FerroMQ / Cluster overview",
          "Traffic, latency, errors, connections and health of FerroMQ clusters (RocketMQ 5 metric names).")
b.row("Traffic")
b.panel("stat", "Messages in", "Messages received from producers per second.",
        [(f'sum(rate(rocketmq_messages_in_total{{{SEL}}}[{R}]))', "in")], unit="reqps", w=6, h=4)
b.panel("stat", "Messages out", "Messages delivered to consumers per second.",
        [(f'sum(rate(rocketmq_messages_out_total{{{SEL}}}[{R}]))', "out")], unit="reqps", w=6, h=4)
b.panel("stat", "Bytes in", "Body bytes received from producers per second.",
        [(f'sum(rate(rocketmq_throughput_in_total{{{SEL}}}[{R}]))', "in")], unit="Bps", w=6, h=4)
b.panel("stat", "Consumer lag", "Messages consumer groups have not settled yet (system groups excluded).",
        [(f'sum(rocketmq_consumer_lag_messages{{{SEL},is_system="false"}})', "lag")], w=6, h=4)
b.panel("timeseries", "Messages in and out by node", "Per storage node (broker group).",
        [(f'sum by (node_id) (rate(rocketmq_messages_in_total{{{SEL}}}[{R}]))', "in {{node_id}}"),
         (f'sum by (node_id) (rate(rocketmq_messages_out_total{{{SEL}}}[{R}]))', "out {{node_id}}")], unit="reqps")
b.panel("timeseries", "Throughput by node", "Body bytes per second in and out.",
        [(f'sum by (node_id) (rate(rocketmq_throughput_in_total{{{SEL}}}[{R}]))', "in {{node_id}}"),
         (f'sum by (node_id) (rate(rocketmq_throughput_out_total{{{SEL}}}[{R}]))', "out {{node_id}}")], unit="Bps")
b.row("RPCs")
b.panel("timeseries", "RPC latency p99 by method", "99th percentile time to answer, per tier and method (milliseconds).",
        [(f'histogram_quantile(0.99, sum by (le, node_type, request_code) (rate(rocketmq_rpc_latency_bucket{{{SEL}}}[{R}])))',
          "{{node_type}} {{request_code}}")], unit="ms")
b.panel("timeseries", "RPC error ratio by method", "Share of calls answered with a status other than OK or MESSAGE_NOT_FOUND.",
        [(f'sum by (node_type, request_code) (rate(rocketmq_rpc_latency_count{{{SEL},response_code!~"ok|message_not_found"}}[{R}])) / sum by (node_type, request_code) (rate(rocketmq_rpc_latency_count{{{SEL}}}[{R}]))',
          "{{node_type}} {{request_code}}")], unit="percentunit")
b.panel("timeseries", "RPCs by status", "Calls per second by RocketMQ status code.",
        [(f'sum by (response_code) (rate(rocketmq_rpc_latency_count{{{SEL}}}[{R}]))', "{{response_code}}")], unit="reqps")
b.panel("timeseries", "Client connections", "Open client connections per pod, against the cap.",
        [(f'sum by (pod) (ferromq_connections{{{SEL},port="clients"}})', "{{pod}}"),
         (f'max(ferromq_connections_max{{{SEL},port="clients"}})', "cap per pod")])
b.row("Health")
b.panel("stat", "Pods reporting", "FerroMQ processes scraped, by tier.",
        [(f'count by (node_type) (ferromq_build_info{{{SEL}}})', "{{node_type}}")], w=6, h=5)
b.panel("stat", "Brokers with a full disk", "Storage nodes refusing sends for lack of disk.",
        [(f'sum(ferromq_store_disk_full{{{SEL}}})', "full")], w=6, h=5,
        fieldConfig={"defaults": {"unit": "short", "thresholds": {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "red", "value": 1}]}}, "overrides": []})
b.panel("stat", "Resources not Ready", "Nameserver, Broker and Topic resources whose Ready condition is not True (scrape the operator to see them).",
        [('sum(1 - ferromq_operator_resource_ready{namespace=~"$namespace"})', "not ready")], w=6, h=5,
        fieldConfig={"defaults": {"unit": "short", "thresholds": {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "orange", "value": 1}]}}, "overrides": []})
b.panel("stat", "Dead letters (1h)", "Messages moved to dead-letter topics in the last hour.",
        [(f'sum(increase(rocketmq_send_to_dlq_messages_total{{{SEL}}}[1h]))', "dlq")], w=6, h=5)
b.panel("timeseries", "Replicated groups: in-sync members", "Leader's view of its in-sync set, against the group's minimum.",
        [(f'max by (broker_group) (ferromq_replication_in_sync_members{{{SEL}}} and on (namespace, pod) ferromq_replication_leader == 1)', "{{broker_group}} in sync"),
         (f'max by (broker_group) (ferromq_replication_min_in_sync_members{{{SEL}}})', "{{broker_group}} minimum")])
b.panel("timeseries", "Replicated groups: leader epoch", "Epoch each member follows or leads; a step is a failover or switchover.",
        [(f'max by (broker_group) (ferromq_replication_epoch{{{SEL}}})', "{{broker_group}}")])
b.write()

# --- topics
b = Board("ferromq-topics", "FerroMQ / Topics", "Per-topic traffic, message types, delays and transactions.",
          extra_vars=[("topic", "Topic", f'label_values(rocketmq_messages_in_total{{{SEL}}}, topic)')])
T = f'{SEL},topic=~"$topic"'
b.row("Produce")
b.panel("timeseries", "Messages in by topic", "Messages per second, by topic and message type.",
        [(f'sum by (topic, message_type) (rate(rocketmq_messages_in_total{{{T}}}[{R}]))', "{{topic}} ({{message_type}})")], unit="reqps")
b.panel("timeseries", "Bytes in by topic", "Body bytes per second.",
        [(f'sum by (topic) (rate(rocketmq_throughput_in_total{{{T}}}[{R}]))', "{{topic}}")], unit="Bps")
b.panel("timeseries", "Average message size", "Body bytes per message.",
        [(f'sum by (topic) (rate(rocketmq_throughput_in_total{{{T}}}[{R}])) / sum by (topic) (rate(rocketmq_messages_in_total{{{T}}}[{R}]))', "{{topic}}")], unit="bytes")
b.panel("timeseries", "Messages in by node", "Where a topic's messages land (broker groups).",
        [(f'sum by (topic, node_id) (rate(rocketmq_messages_in_total{{{T}}}[{R}]))', "{{topic}} on {{node_id}}")], unit="reqps")
b.row("Consume")
b.panel("timeseries", "Messages out by topic and group", "Deliveries per second.",
        [(f'sum by (topic, consumer_group) (rate(rocketmq_messages_out_total{{{T}}}[{R}]))', "{{topic}} → {{consumer_group}}")], unit="reqps")
b.panel("timeseries", "Lag by topic", "Unsettled messages summed over groups.",
        [(f'sum by (topic) (rocketmq_consumer_lag_messages{{{T}}})', "{{topic}}")])
b.row("Delays and transactions")
b.panel("timeseries", "Delay messages waiting", "Timers not yet due, per topic.",
        [(f'sum by (topic) (ferromq_timers_pending{{{T}}})', "{{topic}}")])
b.panel("timeseries", "Half messages", "Transactions waiting for commit or rollback, per topic.",
        [(f'sum by (topic) (rocketmq_half_messages{{{T}}})', "{{topic}}")])
b.panel("timeseries", "Delay messages released and recalled", "Per second, all topics.",
        [(f'sum(rate(ferromq_timers_released_total{{{SEL}}}[{R}]))', "released"),
         (f'sum(rate(ferromq_timers_recalled_total{{{SEL}}}[{R}]))', "recalled")], unit="reqps")
b.panel("timeseries", "Transactions by outcome", "Per second.",
        [(f'sum by (outcome) (rate(ferromq_transactions_total{{{SEL}}}[{R}]))', "{{outcome}}")], unit="reqps")
b.write()

# --- consumer groups
b = Board("ferromq-consumer-groups", "FerroMQ / Consumer groups", "Lag, in-flight messages, lag age, deliveries and dead letters per consumer group.",
          extra_vars=[("consumer_group", "Consumer group", f'label_values(rocketmq_consumer_lag_messages{{{SEL},is_system="false"}}, consumer_group)'),
                      ("topic", "Topic", f'label_values(rocketmq_consumer_lag_messages{{{SEL},consumer_group=~"$consumer_group"}}, topic)')])
G = f'{SEL},consumer_group=~"$consumer_group",topic=~"$topic"'
b.row("Backlog")
b.panel("timeseries", "Lag", "Messages a group has not settled, by topic (RocketMQ's consumer lag).",
        [(f'sum by (consumer_group, topic) (rocketmq_consumer_lag_messages{{{G}}})', "{{consumer_group}} / {{topic}}")])
b.panel("timeseries", "Lag age", "Time since the oldest unsettled message was stored.",
        [(f'max by (consumer_group, topic) (rocketmq_consumer_lag_latency{{{G}}})', "{{consumer_group}} / {{topic}}")], unit="ms")
b.panel("timeseries", "In flight", "Delivered and not yet acknowledged.",
        [(f'sum by (consumer_group, topic) (rocketmq_consumer_inflight_messages{{{G}}})', "{{consumer_group}} / {{topic}}")])
b.panel("timeseries", "Ready", "Receivable now (lag minus in flight).",
        [(f'sum by (consumer_group, topic) (rocketmq_consumer_ready_messages{{{G}}})', "{{consumer_group}} / {{topic}}")])
b.row("Flow")
b.panel("timeseries", "Deliveries", "Messages handed to the group per second.",
        [(f'sum by (consumer_group, topic) (rate(rocketmq_messages_out_total{{{G}}}[{R}]))', "{{consumer_group}} / {{topic}}")], unit="reqps")
b.panel("timeseries", "Lag change", "Growth (positive) or drain (negative) of the backlog per second.",
        [(f'sum by (consumer_group, topic) (deriv(rocketmq_consumer_lag_messages{{{G}}}[5m]))', "{{consumer_group}} / {{topic}}")])
b.panel("timeseries", "Dead letters", "Messages moved to the group's dead-letter topic per second, by the topic they came from.",
        [(f'sum by (consumer_group, topic) (rate(rocketmq_send_to_dlq_messages_total{{{G}}}[{R}]))', "{{consumer_group}} / {{topic}}")], unit="reqps")
b.panel("timeseries", "Oldest unsettled message", "FerroMQ's own view of the same age, in seconds.",
        [(f'max by (group, topic) (ferromq_consumer_oldest_unsettled_age_seconds{{{SEL},group=~"$consumer_group",topic=~"$topic"}})', "{{group}} / {{topic}}")], unit="s")
b.write()

# --- storage
b = Board("ferromq-storage", "FerroMQ / Storage", "Disks, commit logs, flushing, replication and the store's integrity.")
S = SEL
b.row("Disk")
b.panel("timeseries", "Disk used", "Used fraction of each broker's volume, against its disk-high-water mark.",
        [(f'max by (pod) (ferromq_store_disk_used_ratio{{{S}}})', "{{pod}}"),
         (f'max(ferromq_store_disk_high_water_ratio{{{S}}})', "high-water mark")], unit="percentunit")
b.panel("timeseries", "Disk free", "Bytes still allocatable per volume.",
        [(f'min by (pod) (ferromq_store_disk_free_bytes{{{S}}})', "{{pod}}")], unit="bytes")
b.panel("timeseries", "Commit log size", "Bytes of segments on disk.",
        [(f'sum by (node_id) (rocketmq_storage_size{{{S}}})', "{{node_id}}")], unit="bytes")
b.panel("stat", "Full disks", "Brokers refusing sends for lack of disk.",
        [(f'sum(ferromq_store_disk_full{{{S}}})', "full")], w=6, h=8)
b.panel("stat", "Damaged records (24h)", "Records found failing their checksum; never served.",
        [(f'sum(increase(ferromq_store_corrupt_records_total{{{S}}}[24h]))', "corrupt")], w=6, h=8)
b.row("Writes")
b.panel("timeseries", "Append rate", "Bytes appended to the commit log per second.",
        [(f'sum by (pod) (rate(ferromq_store_append_bytes_total{{{S}}}[{R}]))', "{{pod}}")], unit="Bps")
b.panel("timeseries", "Appends", "Records appended per second.",
        [(f'sum by (pod) (rate(ferromq_store_appends_total{{{S}}}[{R}]))', "{{pod}}")], unit="reqps")
b.panel("timeseries", "Flush behind", "Written but not yet flushed to disk.",
        [(f'max by (node_id) (rocketmq_storage_flush_behind_bytes{{{S}}})', "{{node_id}}")], unit="bytes")
b.panel("timeseries", "Flush time", "Average time of one commit log flush (msync); with --flush sync every send waits for one.",
        [(f'sum by (pod) (rate(ferromq_store_flush_seconds_total{{{S}}}[{R}])) / sum by (pod) (rate(ferromq_store_flushes_total{{{S}}}[{R}]))', "{{pod}}")], unit="s")
b.panel("timeseries", "Flushes", "Commit log flushes per second; with --flush sync, appends per flush is the group commit's batch.",
        [(f'sum by (pod) (rate(ferromq_store_flushes_total{{{S}}}[{R}]))', "{{pod}}")], unit="reqps")
b.panel("timeseries", "Dispatch behind", "Written but not yet indexed for consumers.",
        [(f'max by (node_id) (rocketmq_storage_dispatch_behind_bytes{{{S}}})', "{{node_id}}")], unit="bytes")
b.panel("timeseries", "Segments", "Commit log segment files per broker.",
        [(f'max by (pod) (ferromq_store_segments{{{S}}})', "{{pod}}")])
b.panel("timeseries", "Delay message lateness", "Releases per second by how late they were (ms, bucket upper bound).",
        [(f'sum by (upto_ms) (rate(ferromq_timer_lateness_releases_total{{{S}}}[{R}]))', "≤ {{upto_ms}} ms")], unit="reqps")
b.row("Replication")
b.panel("timeseries", "Log held by each member", "The leader's log end, and how far each follower holds it (leader's view).",
        [(f'max by (broker_group) (ferromq_replication_log_end_bytes{{{S}}} and on (namespace, pod) ferromq_replication_leader == 1)', "{{broker_group}} leader log end"),
         (f'max by (broker_group, follower) (ferromq_replication_follower_held_bytes{{{S}}})', "{{broker_group}} replica {{follower}}")], unit="bytes")
b.panel("timeseries", "Unconfirmed bytes", "Log end minus confirm offset: written, not yet readable by consumers.",
        [(f'max by (broker_group, replica) (ferromq_replication_log_end_bytes{{{S}}} - ferromq_replication_confirm_offset_bytes{{{S}}})', "{{broker_group}} replica {{replica}}")], unit="bytes")
b.panel("timeseries", "Leaders", "1 where a member leads.",
        [(f'max by (broker_group, replica) (ferromq_replication_leader{{{S}}})', "{{broker_group}} replica {{replica}}")])
b.panel("timeseries", "Controller elections", "Leader elections made by the replication controller, by kind.",
        [('sum by (kind) (increase(ferromq_controller_elections_total{namespace=~"$namespace"}[1h]))', "{{kind}}")])
b.write()
