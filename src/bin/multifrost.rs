//! `multifrost`: look at the service registry and call workers from a shell.
//!
//!   multifrost services
//!   multifrost call <service-or-endpoint> <function> [JSON-arg ...]
//!   multifrost ping <service-or-endpoint> [count]

use multifrost::registry::Registry;
use multifrost::{json, Options, Parent};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  multifrost services                                   list the registry with liveness
  multifrost call <service|tcp://host:port> <function> [JSON-arg ...]
                                                        call a function, print the result as JSON
  multifrost ping <service|tcp://host:port> [count]     print heartbeat round-trip times";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("services") if args.len() == 1 => services(),
        Some("call") if args.len() >= 3 => call(&args[1], &args[2], &args[3..]),
        Some("ping") if (2..=3).contains(&args.len()) => ping(&args[1], args.get(2)),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn services() -> multifrost::Result<()> {
    let reg = Registry::for_user()?;
    let entries = reg.list();
    if entries.is_empty() {
        println!("no services in {}", reg.file().display());
        return Ok(());
    }
    println!(
        "{:<24} {:>6} {:>8}  {:<6} STARTED",
        "SERVICE", "PORT", "PID", "STATUS"
    );
    for (id, e, alive) in entries {
        let status = if alive { "alive" } else { "dead" };
        println!(
            "{id:<24} {:>6} {:>8}  {status:<6} {}",
            e.port, e.pid, e.started
        );
    }
    Ok(())
}

fn quiet_options() -> Options {
    let mut o = Options::default();
    // One-shot commands need no background heartbeats.
    let _ = o.set_heartbeat(0, 0, 0);
    o
}

fn call(target: &str, function: &str, args: &[String]) -> multifrost::Result<()> {
    let args_json = format!("[{}]", args.join(","));
    let packed = json::args_to_msgpack(&args_json)?;
    let parent = Parent::connect(target, quiet_options())?;
    let reply = parent.call(function, &packed, 0)?;
    println!("{}", json::from_msgpack(reply.bytes())?);
    Ok(())
}

fn ping(target: &str, count: Option<&String>) -> multifrost::Result<()> {
    let count: u32 = match count {
        Some(c) => c
            .parse()
            .map_err(|_| multifrost::Error::invalid(format!("count '{c}' is not a number")))?,
        None => 4,
    };
    let parent = Parent::connect(target, quiet_options())?;
    for i in 0..count {
        let rtt = parent.ping(Duration::from_secs(3))?;
        println!(
            "heartbeat {} from {target}: rtt {:.3} ms",
            i + 1,
            rtt.as_secs_f64() * 1000.0
        );
        if i + 1 < count {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
