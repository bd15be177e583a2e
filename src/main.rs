use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = perfcopy::cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();

    let cancel = perfcopy::pipeline::Cancel::new();
    let on_signal = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        eprintln!("perfcopy: interrupted, stopping (nothing half-written is kept)");
        on_signal.cancel();
    }) {
        eprintln!("perfcopy: warning: cannot install the Ctrl-C handler: {e}");
    }

    let code = match perfcopy::app::run(cli, &cancel) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perfcopy: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
