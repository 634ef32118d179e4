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
    tonic_prost_build::configure()
        // Smaller starting buffers (see `skillup_proto::codec`).
        .codec_path("crate::codec::SmallCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(testing.file_descriptor_set())?;
    Ok(())
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
