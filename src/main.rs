#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ecr_preflight::cli::main()
}
