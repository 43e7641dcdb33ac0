//! Generates the Rust types and tonic stubs from `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate so that a fresh machine builds without a
//! system protobuf compiler; its bundled include directory supplies the google/protobuf imports.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt_include = protoc_bin_vendored::include_path()?;
    // SAFETY of set_var: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let includes = [std::path::PathBuf::from("proto"), wkt_include];
    let protos: [std::path::PathBuf; 8] = [
        "proto/apache/rocketmq/v2/definition.proto".into(),
        "proto/apache/rocketmq/v2/service.proto".into(),
        "proto/ferromq/admin/v1/admin.proto".into(),
        "proto/ferromq/cluster/v1/cluster.proto".into(),
        "proto/ferromq/remoting/v1/tunnel.proto".into(),
        "proto/ferromq/replication/v1/replication.proto".into(),
        "proto/ferromq/controller/v1/controller.proto".into(),
        "proto/ferromq/forward/v1/forward.proto".into(),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        // Message bodies decode as `bytes::Bytes`: a slice of the request's buffer, not a copy,
        // so a proxy forwarding a body and a broker handing it on clone a reference count.
        .bytes(".apache.rocketmq.v2.Message.body")
        // Forwarded sends and their answers are passed on as they are: no copy out of the buffer.
        .bytes(".ferromq.forward.v1.ForwardedSend.request")
        .bytes(".ferromq.forward.v1.ForwardedAnswer.response")
        // Remoting frames cross a proxy's tunnel as shared buffers: a pull's answer is not
        // copied out of the message that carried it.
        .bytes(".ferromq.remoting.v1.Frame.data")
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &includes)?;
    Ok(())
}
