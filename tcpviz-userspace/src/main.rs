fn main() -> std::process::ExitCode {
    tcpviz::cli::run()
}
