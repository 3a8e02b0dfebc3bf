//! Generates the AgentService messages (rust-protobuf) and ttrpc bindings from
//! `proto/agent.proto` into `OUT_DIR`, ready for `include!` (see `src/protocol/mod.rs`).

use std::fs;
use std::path::Path;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("gen");
    fs::create_dir_all(&out).expect("creating OUT_DIR/gen");
    println!("cargo::rerun-if-changed=proto/agent.proto");
    Codegen::new()
        .out_dir(&out)
        .inputs(["proto/agent.proto"])
        .include("proto")
        .rust_protobuf()
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .expect("generating the agent protocol from proto/agent.proto");

    // `include!` cannot take inner attributes or inner doc comments: drop them; the
    // including module carries the allows instead.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let text = fs::read_to_string(out.join(name)).expect("reading generated code");
        let mut cleaned = String::with_capacity(text.len());
        for line in text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
        {
            cleaned.push_str(line);
            cleaned.push('\n');
        }
        fs::write(out.join(name), cleaned).expect("writing generated code");
    }
}
