//! `ward-agent`: `ward-agent init` is the container init helper the library re-executes
//! (hidden, internal); the AgentService server comes next.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("init") {
        ward_agent::container::init::main();
    }
    eprintln!("ward-agent: the AgentService server is not built yet in this version of ward");
    std::process::ExitCode::from(2)
}
