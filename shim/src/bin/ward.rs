//! `ward`.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "compare") {
        return ward_shim::compare::cli::main_from(args);
    }
    eprintln!("ward: not built yet in this version of ward");
    std::process::ExitCode::from(2)
}
