//! The binary: read the configuration, set up logging and signals, run the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use elb_ws_proxy::config::{Config, ProxyProtocol};
use elb_ws_proxy::{health, logging, settings, shutdown};

/// mimalloc: it hands freed pages back, so a burst of WebSocket handshakes does not leave
/// idle tunnels paying for it, and it is far faster than musl's allocator in the static build.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc hands pages back once they have been free for its purge delay (a second), but only
/// when asked: by an allocation, or by a collect. After a burst (5,000 WebSockets opening, then
/// sitting idle) nothing allocates, and the burst's freed pages would stay resident; so a
/// thread of its own asks once a second.
fn return_freed_pages() {
    let spawned = std::thread::Builder::new()
        .name("return-pages".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            // SAFETY: mi_collect takes no pointers and may be called from any thread.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that returns freed memory");
    }
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None => serve(),
        Some("-h" | "--help" | "help") => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!(
                "elb-ws-proxy {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("ELB_WS_PROXY_REVISION")
            );
            ExitCode::SUCCESS
        }
        Some("check") => match Config::from_env() {
            Ok(config) => {
                let at = |port| SocketAddr::new(config.listen_address, port);
                println!(
                    "configuration is valid: plain={} tls={} {}",
                    at(config.listen_on),
                    at(config.listen_on_tls),
                    config.summary()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_error(e),
        },
        Some("healthcheck") => healthcheck(),
        Some(other) => {
            eprintln!("elb-ws-proxy: unknown argument {other:?}; see --help");
            ExitCode::from(2)
        }
    }
}

fn config_error(e: elb_ws_proxy::config::ConfigError) -> ExitCode {
    eprintln!("elb-ws-proxy: configuration error: {e}");
    ExitCode::from(2)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    logging::init(config.log_format, &config.log_filter);
    return_freed_pages();
    warn_about_config_overrides(Path::new("/config-overrides"));
    let result =
        runtime().and_then(|rt| rt.block_on(elb_ws_proxy::run(config, shutdown::signals())));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("elb-ws-proxy: {e}");
            ExitCode::FAILURE
        }
    };
    logging::flush();
    code
}

fn healthcheck() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        // A container's HEALTHCHECK reads 0 as healthy and 1 as unhealthy; anything else is
        // reserved, so a configuration it cannot read is unhealthy too.
        Err(e) => {
            eprintln!("elb-ws-proxy healthcheck: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.listen_on_tls);
    let send_header = config.proxy_protocol != ProxyProtocol::Off;
    match runtime()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(health::probe(addr, send_header)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elb-ws-proxy healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The nginx image included `/config-overrides/*.conf`; those files mean nothing here.
fn warn_about_config_overrides(dir: &Path) {
    let names = elb_ws_proxy::config::leftover_overrides(dir);
    if !names.is_empty() {
        tracing::warn!(
            files = names.join(", "),
            "{} holds nginx snippets, which elb-ws-proxy does not read; use the settings in --help instead",
            dir.display()
        );
    }
}

fn help() -> String {
    format!(
        "elb-ws-proxy {}\n\
         Reverse proxy for HTTP and WebSockets behind an AWS load balancer that sends PROXY protocol headers.\n\n\
         USAGE:\n  elb-ws-proxy              run the proxy (configured by environment variables)\n  \
         elb-ws-proxy check        validate the configuration and exit\n  \
         elb-ws-proxy healthcheck  ask /ping on 127.0.0.1:$LISTEN_ON_TLS; exit 0 when healthy, 1 when not\n  \
         elb-ws-proxy --version\n\n{}",
        env!("CARGO_PKG_VERSION"),
        settings::help()
    )
}
