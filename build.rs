//! Compiles every contract under `proto/` with protox (pure Rust: no `protoc` on any machine),
//! generates tonic clients and servers, and writes the descriptor set that reflection and the
//! edge's transcoder read.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-testing");
    let mut served = Vec::new();
    collect(&PathBuf::from("proto/skillup"), &mut served)?;
    served.sort();
    let mut testing = served.clone();
    collect(&PathBuf::from("proto-testing/skillup"), &mut testing)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // `encode_file_descriptor_set` keeps extension options (`google.api.http`,
    // `skillup.common.v1.edge`, field behaviour), which prost's own types would drop; the
    // edge reads its routes from them.
    let compile = |files: &[PathBuf]| -> Result<protox::Compiler, Box<dyn std::error::Error>> {
        let mut c = protox::Compiler::new(["proto", "proto-testing"])?;
        c.include_imports(true).include_source_info(true);
        c.open_files(files)?;
        Ok(c)
    };
    // What `skillup` serves and routes.
    let served = compile(&served)?;
    fs::write(out.join("skillup_descriptor.bin"), served.encode_file_descriptor_set())?;
    // Everything, the testing service included: for the edge's tests.
    let testing = compile(&testing)?;
    fs::write(out.join("testing_descriptor.bin"), testing.encode_file_descriptor_set())?;
    fs::write(out.join("callers.rs"), callers(&testing.descriptor_pool())?)?;
    let tonic = tonic_prost_build::configure()
        // Smaller starting buffers (see `skillup_proto::codec`).
        .codec_path("crate::codec::SmallCodec")
        .build_client(true)
        .build_server(true)
        .service_generator();
    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` on every message: the event catalogue (`skillup_proto::events`) takes the
    // type URL of each event's payload from it.
    config.enable_type_names();
    // Our packages sit at the crate's root (`crate::ai::v1`, not `crate::skillup::ai::v1`), so a
    // reference to a `google.api` message must be absolute; `HttpBody` is written in `lib.rs`.
    config.extern_path(".google.api.HttpBody", "crate::google::api::HttpBody");
    config.service_generator(Box::new(WithLocal(tonic)));
    config.compile_fds(testing.file_descriptor_set())?;
    Ok(())
}

/// `skillup.common.v1.callers` of every RPC as a table the kit's server layer checks callers
/// against (`skillup_proto::callers::CALLERS`): no reflection at run time. An RPC without the
/// option fails the build — every RPC states who may call it.
fn callers(
    pool: &protox::prost_reflect::DescriptorPool,
) -> Result<String, Box<dyn std::error::Error>> {
    use protox::prost_reflect::Value;
    use std::fmt::Write as _;
    let ext = pool
        .get_extension_by_name("skillup.common.v1.callers")
        .ok_or("skillup.common.v1.callers is not defined")?;
    let http =
        pool.get_extension_by_name("google.api.http").ok_or("google.api.http is not defined")?;
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            if !options.has_extension(&ext) {
                missing.push(path);
                continue;
            }
            let rule = options.get_extension(&ext);
            let components: Vec<String> = rule
                .as_message()
                .and_then(|m| m.get_field_by_name("components"))
                .and_then(|v| match v.as_ref() {
                    Value::List(items) => {
                        Some(items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            if components.is_empty() {
                missing.push(path);
                continue;
            }
            if options.has_extension(&http) && !components.iter().any(|c| c == "edge") {
                return Err(
                    format!("{path} has an HTTP route, so its callers must name the edge").into()
                );
            }
            rows.push((path, components));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "every RPC states who may call it (`option (skillup.common.v1.callers)`); these do not: {}",
            missing.join(", ")
        )
        .into());
    }
    rows.sort();
    let mut out = String::from(
        "/// Every RPC's path and the components that may call it (`skillup.common.v1.callers`).\n\
         pub const CALLERS: &[(&str, &[&str])] = &[\n",
    );
    for (path, components) in rows {
        let _ = writeln!(out, "    ({path:?}, &{components:?}),");
    }
    out.push_str("];\n");
    Ok(out)
}

/// tonic's client and server, then `<service>_local::handlers`: every unary method of the
/// service as a plain async function of encoded bytes, for callers in the same process
/// (`skillup_proto::local`).
struct WithLocal(Box<dyn prost_build::ServiceGenerator>);

impl prost_build::ServiceGenerator for WithLocal {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let local = local_handlers(&service);
        self.0.generate(service, buf);
        buf.push_str(&local);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.0.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.0.finalize_package(package, buf);
    }
}

fn local_handlers(service: &prost_build::Service) -> String {
    use std::fmt::Write as _;
    // tonic's names: module `<snake name>_server`, trait `<name>`.
    let snake = naive_snake_case(&service.name);
    let service_trait = format!("super::{snake}_server::{}", service.name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "/// `{name}`'s unary methods for callers in this process: see [`crate::local`].\n\
         pub mod {snake}_local {{\n\
         #![allow(clippy::wildcard_imports, unused_imports)]\n\
         use tonic::codegen::*;\n\
         /// Every unary method of `inner`, by gRPC path.\n\
         pub fn handlers<T: {service_trait}>(inner: Arc<T>) -> crate::local::Handlers {{\n\
         let mut handlers: crate::local::Handlers = Vec::new();",
        name = service.proto_name,
    );
    for m in &service.methods {
        // Streams stay on gRPC framing; so do well-known types (prost maps Empty to `()`).
        if m.client_streaming
            || m.server_streaming
            || m.input_proto_type.starts_with(".google.protobuf.")
            || m.output_proto_type.starts_with(".google.protobuf.")
        {
            continue;
        }
        let path = format!("/{}.{}/{}", service.package, service.proto_name, m.proto_name);
        let _ = writeln!(
            out,
            "{{ let inner = inner.clone();\n\
             handlers.push((\"{path}\", Arc::new(move |req: tonic::Request<Bytes>| {{\n\
             let inner = inner.clone();\n\
             Box::pin(async move {{\n\
             let req = crate::local::decode::<super::{input}>(req)?;\n\
             let res = <T as {service_trait}>::{method}(&inner, req).await?;\n\
             Ok(crate::local::encode(res))\n\
             }}) as crate::local::UnaryFuture\n\
             }}))); }}",
            input = m.input_type,
            method = m.name,
        );
    }
    let _ = writeln!(
        out,
        "handlers\n}}\n\
         /// The tonic server of `inner` and its unary methods for direct calls, on one instance.\n\
         pub fn serve<T: {service_trait}>(inner: T) -> (super::{snake}_server::{name}Server<T>, crate::local::Handlers) {{\n\
         let inner = Arc::new(inner);\n\
         (super::{snake}_server::{name}Server::from_arc(inner.clone()), handlers(inner))\n\
         }}\n}}",
        name = service.name,
    );
    out
}

/// tonic-build's module naming (`AuthService` → `auth_service`).
fn naive_snake_case(name: &str) -> String {
    let mut s = String::new();
    let mut it = name.chars().peekable();
    while let Some(x) = it.next() {
        s.push(x.to_ascii_lowercase());
        if it.peek().is_some_and(|y| y.is_uppercase()) {
            s.push('_');
        }
    }
    s
}

fn collect(dir: &PathBuf, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
