//! `ferromq-operator`: `run` starts the controllers (after winning the leader Lease);
//! `cleanup` deletes FerroMQ resources in dependency order (the chart's pre-delete hook);
//! `crds` prints or writes the CRD manifests generated from the Rust types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use kube::{Api, Client};

use ferromq_operator::admin::GrpcAdmin;
use ferromq_operator::controller::{self, Context};
use ferromq_operator::crd::{Broker, Nameserver, Topic, User};
use ferromq_operator::leader::LeaseLock;
use ferromq_operator::metrics::{Metrics, Readiness};

#[derive(Parser)]
#[command(
    name = "ferromq-operator",
    version,
    about = "Kubernetes operator for FerroMQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FERROMQ_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Send every admin call to this host:port instead of each Broker's client Service
    /// (`<broker>.<namespace>.svc:8081`). For running the operator outside the cluster.
    #[arg(long, env = "FERROMQ_OPERATOR_ADMIN_ADDRESS")]
    admin_address: Option<String>,
    /// Address of the operator's own /healthz and /metrics.
    #[arg(
        long,
        env = "FERROMQ_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "FERROMQ_OPERATOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "FERROMQ_OPERATOR_LEASE_NAME",
        default_value = "ferromq-operator"
    )]
    lease_name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds; a standby takes over this long after the leader stops renewing.
    #[arg(long, env = "FERROMQ_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Log format.
    #[arg(
        long,
        env = "FERROMQ_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers.
    Run(RunArgs),
    /// Delete the FerroMQ resources matching a label selector (Topics and Users, then Brokers,
    /// then Nameservers) and wait until they are gone; the chart's pre-delete hook runs it.
    Cleanup {
        /// Namespace of the resources.
        #[arg(long, env = "FERROMQ_OPERATOR_NAMESPACE")]
        namespace: String,
        /// Label selector, e.g. `app.kubernetes.io/instance=ferromq`.
        #[arg(long)]
        selector: String,
        /// Give up (exit 1, naming what is left) after this many seconds.
        #[arg(long, default_value_t = 240)]
        timeout_seconds: u64,
    },
    /// Print the CRDs generated from the Rust types, or write `<kind>.yaml` files into directories.
    Crds {
        /// Directory to write `nameserver.yaml`, `broker.yaml`, `topic.yaml` and `user.yaml` into; repeat it
        /// to write several (the repository keeps `crds/` and `charts/ferromq/crds/`).
        #[arg(long)]
        out: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out } => write_crds(out),
        Command::Cleanup {
            namespace,
            selector,
            timeout_seconds,
        } => {
            init_tracing(LogFormat::Text);
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(async {
                let client = Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API")?;
                ferromq_operator::cleanup::run(
                    &client,
                    &namespace,
                    &selector,
                    Duration::from_secs(timeout_seconds),
                )
                .await
                .with_context(|| format!("cleaning up {selector} in {namespace}"))
            })
        }
        Command::Run(args) => {
            init_tracing(args.log_format);
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(run(args))
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn write_crds(out: Vec<PathBuf>) -> anyhow::Result<()> {
    for (kind, crd) in ferromq_operator::crd::all() {
        let yaml = ferromq_operator::crd::render_yaml(&crd)?;
        if out.is_empty() {
            print!("---\n{yaml}");
        }
        for dir in &out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{kind}.yaml"));
            std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Reports the Ready condition of every `kind` object in the controller's cache at scrape time.
fn report_readiness<K>(
    metrics: &Metrics,
    kind: &'static str,
    cache: kube::runtime::reflector::Store<K>,
    conditions: fn(&K) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    metrics.watch_readiness(Box::new(move || {
        cache
            .state()
            .iter()
            .map(|o| Readiness::of(kind, &**o, conditions(o)))
            .collect()
    }));
}

async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, app).await.context("serving HTTP")
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// SIGTERM and SIGINT, registered once at start-up so that a signal arriving at any moment
/// (waiting for the Lease, starting the controllers, running) is seen.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("registering SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("registering SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut signals = Signals::register()?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    let http = tokio::spawn(serve_http(args.http_addr, metrics.clone()));

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("ferromq-operator-{}", std::process::id()));
    let lease_duration = Duration::from_secs(args.lease_seconds.max(2));
    let lock = LeaseLock::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        lease_duration,
    );
    tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");
    tokio::select! {
        res = lock.acquire(lease_duration / 3) => res.context("acquiring the leader lease")?,
        _ = signals.recv() => {
            tracing::info!("signal received while waiting for leadership; exiting");
            return Ok(());
        }
    }
    tracing::info!(%identity, "leading");

    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(GrpcAdmin::default()),
        args.admin_address.clone(),
        Some(identity.clone()),
        metrics.clone(),
    ));
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=ferromq-operator");
    let ns = &args.namespace;

    let nameserver_controller =
        Controller::new(api::<Nameserver>(&client, ns), watcher::Config::default());
    let nameserver_cache = nameserver_controller.store();
    report_readiness(&metrics, "Nameserver", nameserver_cache, |n| {
        n.status.as_ref().map(|s| s.conditions.as_slice())
    });
    let nameservers = nameserver_controller
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        // The cluster CA and the name servers' certificate.
        .owns(api::<Secret>(&client, ns), owned.clone())
        .run(
            controller::nameserver::reconcile,
            controller::nameserver::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "nameserver controller");
            }
        });
    let broker_controller = Controller::new(api::<Broker>(&client, ns), watcher::Config::default());
    // A Nameserver change (replica count) changes the rendered broker config: requeue the
    // Brokers that reference it.
    let broker_store = broker_controller.store();
    let broker_cache = broker_controller.store();
    report_readiness(&metrics, "Broker", broker_cache, |b| {
        b.status.as_ref().map(|s| s.conditions.as_slice())
    });
    let brokers = broker_controller
        .watches(
            api::<Nameserver>(&client, ns),
            watcher::Config::default(),
            move |nameserver| {
                let ns_name = nameserver.name_any();
                let namespace = nameserver.namespace();
                broker_store
                    .state()
                    .into_iter()
                    .filter(|b| b.namespace() == namespace && b.spec.nameserver_ref.name == ns_name)
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        // Internal certificates and the generated super user.
        .owns(api::<Secret>(&client, ns), owned.clone())
        .run(
            controller::broker::reconcile,
            controller::broker::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "broker controller");
            }
        });
    let topic_controller = Controller::new(api::<Topic>(&client, ns), watcher::Config::default());
    report_readiness(&metrics, "Topic", topic_controller.store(), |t| {
        t.status.as_ref().map(|s| s.conditions.as_slice())
    });
    // A Broker change (a storage group added and Ready) may leave topics on fewer groups than
    // the cluster has: requeue the Topics that reference it, so they are extended at once.
    let topic_store = topic_controller.store();
    let topics = topic_controller
        .watches(
            api::<Broker>(&client, ns),
            watcher::Config::default(),
            move |broker| {
                let broker_name = broker.name_any();
                let namespace = broker.namespace();
                topic_store
                    .state()
                    .into_iter()
                    .filter(|t| t.namespace() == namespace && t.spec.broker_ref.name == broker_name)
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            controller::topic::reconcile,
            controller::topic::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "topic controller");
            }
        });

    let user_controller = Controller::new(api::<User>(&client, ns), watcher::Config::default());
    report_readiness(&metrics, "User", user_controller.store(), |u| {
        u.status.as_ref().map(|s| s.conditions.as_slice())
    });
    // A Broker change (authentication turned on, its super user's Secret fixed, a group added)
    // decides whether and where the Users that reference it can be synced.
    let user_store = user_controller.store();
    let users = user_controller
        .owns(api::<Secret>(&client, ns), owned.clone())
        .watches(
            api::<Broker>(&client, ns),
            watcher::Config::default(),
            move |broker| {
                let broker_name = broker.name_any();
                let namespace = broker.namespace();
                user_store
                    .state()
                    .into_iter()
                    .filter(|u| u.namespace() == namespace && u.spec.broker_ref.name == broker_name)
                    .map(|u| ObjectRef::from_obj(&*u))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            controller::user::reconcile,
            controller::user::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "user controller");
            }
        });

    let controllers = async {
        futures::join!(nameservers, brokers, topics, users);
    };
    let outcome = tokio::select! {
        _ = signals.recv() => {
            // Dropping the controllers abandons in-flight reconciles; every step is an
            // idempotent apply, so the next leader simply redoes it.
            tracing::info!("signal received; stopping the controllers and releasing the lease");
            if let Err(e) = lock.release().await {
                tracing::warn!(error = %e, "could not release the lease");
            }
            Ok(())
        }
        _ = controllers => Err(anyhow::anyhow!("controllers stopped unexpectedly")),
        lost = lock.hold(lease_duration / 3) => Err(anyhow::anyhow!("lost leadership: {lost}")),
        res = http => match res {
            Ok(Ok(())) => Err(anyhow::anyhow!("HTTP server stopped")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
        },
    };
    outcome
}
