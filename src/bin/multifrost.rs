//! `multifrost`: look at the service registry and call workers from a shell.
//!
//!   multifrost [--json] [--timeout MS] services
//!   multifrost [--json] [--timeout MS] call <service-or-endpoint> <function> [JSON-arg ...]
//!   multifrost [--json] [--timeout MS] ping <service-or-endpoint> [count]
//!   multifrost [--json] prune
//!   multifrost --version

use multifrost::registry::Registry;
use multifrost::{json, Error, ErrorKind, Options, Parent};
use serde_json::{json as js, Value};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: multifrost [--json] [--timeout MS] <command> ...
  services                                   list the registry with liveness
  call <service|tcp://host:port> <function> [JSON-arg ...]
                                             call a function, print the result as JSON
  ping <service|tcp://host:port> [count]     print heartbeat round-trip times
  prune                                      remove the registry entries of dead processes

options (anywhere before `--`):
  --json         machine-readable output; errors too, as {\"error\": {...}} on stdout
  --timeout MS   limit for finding the service and for each call or heartbeat
                 (default: 5000 to find it, 30000 per call, 3000 per heartbeat)
  --version      print the version
  -h, --help     this text

exit status: 0 success, 1 failure, 2 wrong usage";

/// Settings common to every command.
struct Cli {
    json: bool,
    timeout_ms: Option<u32>,
}

fn main() -> ExitCode {
    let mut cli = Cli {
        json: false,
        timeout_ms: None,
    };
    let mut args: Vec<String> = Vec::new();
    let mut raw = std::env::args().skip(1);
    while let Some(a) = raw.next() {
        match a.as_str() {
            "--" => {
                args.extend(raw.by_ref());
                break;
            }
            "--json" => cli.json = true,
            "--version" | "-V" => {
                println!("multifrost {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--timeout" => match raw.next().as_deref().map(parse_ms) {
                Some(Ok(ms)) => cli.timeout_ms = Some(ms),
                Some(Err(e)) => return usage_error(&e),
                None => return usage_error("--timeout needs a number of milliseconds"),
            },
            s if s.starts_with("--timeout=") => match parse_ms(&s["--timeout=".len()..]) {
                Ok(ms) => cli.timeout_ms = Some(ms),
                Err(e) => return usage_error(&e),
            },
            _ => args.push(a),
        }
    }
    let result = match args.first().map(String::as_str) {
        Some("services") if args.len() == 1 => services(&cli),
        Some("prune") if args.len() == 1 => prune(&cli),
        Some("call") if args.len() >= 3 => call(&cli, &args[1], &args[2], &args[3..]),
        Some("ping") if (2..=3).contains(&args.len()) => ping(&cli, &args[1], args.get(2)),
        Some("help") => {
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
            if cli.json {
                let out = js!({"error": {"status": status_name(e.kind), "message": e.message}});
                println!("{out}");
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn usage_error(text: &str) -> ExitCode {
    eprintln!("error: {text}\n\n{USAGE}");
    ExitCode::from(2)
}

fn parse_ms(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "--timeout '{text}' is not a positive number of milliseconds"
        )),
    }
}

/// The C API's name of a failure, e.g. `MF_ERR_REMOTE`.
fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "MF_ERR_INVALID_ARGUMENT",
        ErrorKind::Timeout => "MF_ERR_TIMEOUT",
        ErrorKind::Remote => "MF_ERR_REMOTE",
        ErrorKind::CircuitOpen => "MF_ERR_CIRCUIT_OPEN",
        ErrorKind::WorkerExited => "MF_ERR_WORKER_EXITED",
        ErrorKind::NotFound => "MF_ERR_NOT_FOUND",
        ErrorKind::AlreadyRunning => "MF_ERR_ALREADY_RUNNING",
        ErrorKind::Protocol => "MF_ERR_PROTOCOL",
        ErrorKind::Io => "MF_ERR_IO",
        ErrorKind::Closed => "MF_ERR_CLOSED",
        ErrorKind::Panic => "MF_ERR_PANIC",
        ErrorKind::Cancelled => "MF_ERR_CANCELLED",
        ErrorKind::NoSuchFunction => "MF_ERR_NO_SUCH_FUNCTION",
    }
}

fn services(cli: &Cli) -> multifrost::Result<()> {
    let reg = Registry::for_user()?;
    let entries = reg.list();
    if cli.json {
        let list: Vec<Value> = entries
            .iter()
            .map(|(id, e, alive)| {
                js!({"service": id, "port": e.port, "pid": e.pid, "alive": alive, "started": e.started})
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
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

fn prune(cli: &Cli) -> multifrost::Result<()> {
    let reg = Registry::for_user()?;
    let removed = reg.prune()?;
    if cli.json {
        println!("{}", js!({ "removed": removed }));
    } else if removed.is_empty() {
        println!("nothing to prune in {}", reg.file().display());
    } else {
        for id in &removed {
            println!("removed {id}");
        }
    }
    Ok(())
}

/// Fails at once when `target` is a service id with no live entry: waiting
/// for the connect timeout helps a script that starts the worker just before,
/// not a person at a prompt, so only --timeout asks for the wait.
fn check_registered(cli: &Cli, target: &str) -> multifrost::Result<()> {
    if multifrost::is_endpoint(target) || cli.timeout_ms.is_some() {
        return Ok(());
    }
    let reg = Registry::for_user()?;
    let entry = reg.list().into_iter().find(|(id, _, _)| id == target);
    match entry {
        Some((_, _, true)) => Ok(()),
        Some((_, e, false)) => Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "service '{target}' is registered by pid {} (port {}), which is no longer running; \
                 `multifrost prune` removes such entries",
                e.pid, e.port
            ),
        )),
        None => Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "service '{target}' is not in {} (`multifrost services` lists what is; \
                 --timeout MS waits for it to appear)",
                reg.file().display()
            ),
        )),
    }
}

fn options(cli: &Cli) -> Options {
    let mut o = Options::default();
    // One-shot commands need no background heartbeats.
    let _ = o.set_heartbeat(0, 0, 0);
    if let Some(ms) = cli.timeout_ms {
        let _ = o.set_connect_timeout(i64::from(ms));
    }
    o
}

/// Each argument parsed alone, so an error points into the text the user typed.
fn parse_args(args: &[String]) -> multifrost::Result<String> {
    for (i, a) in args.iter().enumerate() {
        if let Err(e) = serde_json::from_str::<Value>(a) {
            return Err(Error::invalid(json_error(i + 1, a, &e)));
        }
    }
    Ok(format!("[{}]", args.join(",")))
}

/// "argument 2 is not JSON (line 1, column 5: ...)" plus the line and a caret.
fn json_error(n: usize, text: &str, e: &serde_json::Error) -> String {
    let line_no = e.line().max(1);
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let col = e.column().max(1);
    // The caret goes under the character; columns count bytes.
    let pad: String = line
        .char_indices()
        .take_while(|(b, _)| *b < col - 1)
        .map(|(_, c)| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let mut reason = e.to_string();
    if let Some(cut) = reason.find(" at line ") {
        reason.truncate(cut);
    }
    let hint = if text.chars().next().is_some_and(|c| c.is_alphabetic())
        && !matches!(text, "true" | "false" | "null")
    {
        " (a string needs JSON quotes: '\"text\"')"
    } else {
        ""
    };
    format!(
        "argument {n} is not JSON: {reason} at line {}, column {col}{hint}\n  {line}\n  {pad}^",
        e.line()
    )
}

fn call(cli: &Cli, target: &str, function: &str, args: &[String]) -> multifrost::Result<()> {
    let packed = json::args_to_msgpack(&parse_args(args)?)?;
    check_registered(cli, target)?;
    let parent = Parent::connect(target, options(cli))?;
    let reply = parent.call(function, &packed, cli.timeout_ms.map_or(0, i64::from))?;
    let result = json::from_msgpack(reply.bytes())?;
    if cli.json {
        // The result is JSON text already: wrap it without a re-parse.
        println!("{{\"result\":{result}}}");
    } else {
        println!("{result}");
    }
    Ok(())
}

fn ping(cli: &Cli, target: &str, count: Option<&String>) -> multifrost::Result<()> {
    let count: u32 = match count {
        Some(c) => c
            .parse()
            .map_err(|_| Error::invalid(format!("count '{c}' is not a number")))?,
        None => 4,
    };
    check_registered(cli, target)?;
    let parent = Parent::connect(target, options(cli))?;
    let wait = Duration::from_millis(u64::from(cli.timeout_ms.unwrap_or(3000)));
    for i in 0..count {
        let rtt = parent.ping(wait)?;
        let ms = rtt.as_secs_f64() * 1000.0;
        if cli.json {
            println!("{}", js!({"seq": i + 1, "target": target, "rtt_ms": ms}));
        } else {
            println!("heartbeat {} from {target}: rtt {ms:.3} ms", i + 1);
        }
        if i + 1 < count {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
