use clap::Parser;
use hakube_build::cli::{Cli, Command};
use hakube_build::{errors, image, render, summary};

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAKUBE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Render(args)) => render::run(&args),
        Some(Command::Summary(args)) => summary::run(&args),
        None => image::run(&cli.build),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(errors::exit_code(&err));
    }
}
