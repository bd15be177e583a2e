use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = perfcopy::cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();

    // A corrupt Parquet file can make arrow-rs' decoder panic; perfcopy catches that and reports
    // an error naming the file, so the default panic message (and backtrace) would only look
    // like a crash. Every other panic is still reported as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !perfcopy::source::parquet::decoder_panic_is_caught() {
            default_hook(info)
        }
    }));

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
            // On a terminal an error wraps at 80 columns; in a log it stays one line to grep.
            let say = |text: String| match std::io::stderr().is_terminal() {
                true => eprintln!("{}", perfcopy::pipeline::human::wrap(&text, 4)),
                false => eprintln!("{text}"),
            };
            say(format!("perfcopy: error: {e}"));
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                say(format!("  caused by: {s}"));
                source = s.source();
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
