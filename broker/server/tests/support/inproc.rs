//! Roles run inside the test process (name server, broker groups, proxy), each bound on a port
//! the system picks and stopped through the one serve loop.

use std::time::Duration;

use ferromq::config::broker::MemberConfig;
use ferromq::config::nameserver::NameserverConfig;
use ferromq::config::node::NodeConfig;
use ferromq::config::proxy::ProxyConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A role running in this process, and the switch that stops it.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("role task")
            .expect("role stopped cleanly");
    }
}

fn stop_switch() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

pub fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A name server; answers its address.
pub async fn nameserver() -> (Running, String) {
    let ns = ferromq::roles::nameserver::bind(NameserverConfig {
        limits: Default::default(),
        addr: loopback(),
        http_addr: loopback(),
        broker_expiry: Duration::from_secs(3),
        tls: None,
        link: Default::default(),
        controller: None,
    })
    .await
    .expect("nameserver binds");
    let addr = ns.addr().to_string();
    let (stop, stopped) = stop_switch();
    let running = Running {
        stop,
        task: tokio::spawn(ns.run(stopped)),
    };
    (running, addr)
}

/// A broker group's leader reporting to `ns`, its storage in `dir`; `tune` adjusts the
/// configuration (auth settings, ...).
pub async fn broker_with(
    group: &str,
    ns: &str,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut NodeConfig),
) -> Running {
    let mut cfg = NodeConfig::defaults();
    cfg.data_dir = dir.to_path_buf();
    cfg.engine.data_dir = dir.to_path_buf();
    cfg.grpc_addr = loopback();
    cfg.http_addr = loopback();
    cfg.advertise_addr = "127.0.0.1:0".into();
    cfg.segment_size = 8 << 20;
    tune(&mut cfg);
    let member = MemberConfig {
        group: group.into(),
        nameservers: vec![ns.to_string()],
        link: Default::default(),
        replication: None,
    };
    let bound = ferromq::roles::node::bind(cfg, Some(member))
        .await
        .expect("broker binds");
    let (stop, stopped) = stop_switch();
    Running {
        stop,
        task: tokio::spawn(bound.run(stopped)),
    }
}

pub async fn broker(group: &str, ns: &str, dir: &std::path::Path) -> Running {
    broker_with(group, ns, dir, |_| {}).await
}

/// A proxy reading routes from `ns`; answers its gRPC port.
pub async fn proxy(ns: &str) -> (Running, u16) {
    let (running, port, _) = proxy_with_remoting(ns, false).await;
    (running, port)
}

/// A proxy as [`proxy`] makes, with a remoting port on loopback when `remoting` is set: the
/// gRPC port and the remoting port (0 when off).
pub async fn proxy_with_remoting(ns: &str, remoting: bool) -> (Running, u16, u16) {
    let (running, port, remoting_port, _) = proxy_with_ports(ns, remoting).await;
    (running, port, remoting_port)
}

/// A proxy as [`proxy_with_remoting`] makes; also answers its HTTP port (`/metrics`).
pub async fn proxy_with_ports(ns: &str, remoting: bool) -> (Running, u16, u16, u16) {
    let proxy = ferromq::roles::proxy::bind(ProxyConfig {
        remoting: remoting.then(|| ferromq::config::node::RemotingListen {
            addr: loopback(),
            advertise: None,
        }),
        limits: Default::default(),
        grpc_addr: loopback(),
        http_addr: loopback(),
        nameservers: vec![ns.to_string()],
        route_refresh: Duration::from_millis(200),
        advertise_addr: "127.0.0.1:0".into(),
        tls: None,
        link: Default::default(),
    })
    .await
    .expect("proxy binds");
    let port = proxy.grpc_addr().port();
    let remoting_port = proxy.remoting_addr().map_or(0, |a| a.port());
    let http_port = proxy.http_addr().port();
    let (stop, stopped) = stop_switch();
    let running = Running {
        stop,
        task: tokio::spawn(proxy.run(stopped)),
    };
    (running, port, remoting_port, http_port)
}

/// A name server that is also one peer of the replication controller (`peers` holds every
/// peer's address, `addr` among them); its Raft state in `dir`.
pub async fn controller_nameserver(addr: &str, peers: &[String], dir: &std::path::Path) -> Running {
    let id = peers
        .iter()
        .position(|p| p == addr)
        .expect("addr among the peers") as u64
        + 1;
    let ns = ferromq::roles::nameserver::bind(NameserverConfig {
        limits: Default::default(),
        addr: addr.parse().expect("addr"),
        http_addr: loopback(),
        broker_expiry: Duration::from_secs(3),
        tls: None,
        link: Default::default(),
        controller: Some(ferromq_controller::ControllerConfig {
            id,
            peers: peers.to_vec(),
            data_dir: dir.to_path_buf(),
            timing: ferromq_controller::Timing {
                member_expiry: Duration::from_millis(1500),
                lease: Duration::from_millis(1000),
                ..ferromq_controller::Timing::default()
            },
            heartbeat_interval: Duration::from_millis(200),
            link: Default::default(),
        }),
    })
    .await
    .expect("name server binds");
    let (stop, stopped) = stop_switch();
    Running {
        stop,
        task: tokio::spawn(ns.run(stopped)),
    }
}

/// Member `replica_id` of the replicated group `group` (`sync` mode), reporting to and
/// heartbeating the controller in `ns`; `tune` adjusts the configuration. Answers its gRPC
/// address.
pub async fn member_with(
    group: &str,
    replica_id: u32,
    ns: &[String],
    dir: &std::path::Path,
    tune: impl FnOnce(&mut NodeConfig),
) -> (Running, std::net::SocketAddr) {
    let mut cfg = NodeConfig::defaults();
    cfg.data_dir = dir.to_path_buf();
    cfg.engine.data_dir = dir.to_path_buf();
    cfg.grpc_addr = loopback();
    cfg.http_addr = loopback();
    cfg.advertise_addr = "127.0.0.1:0".into();
    cfg.segment_size = 8 << 20;
    tune(&mut cfg);
    let member = MemberConfig {
        group: group.into(),
        nameservers: ns.to_vec(),
        link: Default::default(),
        replication: Some(ferromq::config::broker::ReplicationSettings {
            replica_id,
            mode: ferromq::replication::Mode::Sync,
            min_in_sync: 1,
            replica_lag: Duration::from_secs(4),
            ack_timeout: Duration::from_secs(5),
            controller: ns.to_vec(),
        }),
    };
    let bound = ferromq::roles::member::bind(cfg, member)
        .await
        .expect("member binds");
    let addr = bound.grpc_addr();
    let (stop, stopped) = stop_switch();
    (
        Running {
            stop,
            task: tokio::spawn(bound.run(stopped)),
        },
        addr,
    )
}
