//! `quasarctl kv ...`: key-value commands over the blocking client (which routes by key,
//! follows `NotLeader`/`KeyNotInRange` and retries with one session sequence per command).

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{
    AdminOp, AdminReply, Compare, CompareOp, CompareTarget, Expected, KeyVersion, Operation,
    RangeDescriptor, RangeSelector, Reply, RequestError, ShardId, Txn, TxnBranch, TxnOp,
    TxnOpResult, VersionedValue,
};
use serde_json::{json, Value};

use crate::cluster::{reply_kind, Cluster};
use crate::{escaped, json_text, table, Outcome, Output, Report};

/// `quasarctl kv ...`
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Read a key (exit 1 when it does not exist).
    Get { key: String },
    /// Write a key.
    Put { key: String, value: String },
    /// Delete a key (a missing key is not an error).
    #[command(alias = "del")]
    Delete { key: String },
    /// List keys in [START, END) in order, page by page.
    Scan(ScanArgs),
    /// Compare-and-set: write NEW_VALUE only if the key is as expected (exit 1 otherwise).
    Cas(CasArgs),
    /// An atomic transaction: if every --if holds run the --then ops, else the --else ops
    /// (exit 1 when the --else branch ran).
    Txn(TxnArgs),
    /// Add to a counter (8 little-endian bytes; absent counts as 0).
    Incr {
        key: String,
        /// What to add (may be negative).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// First key (inclusive); default: the first user key.
    pub start: Option<String>,
    /// End (exclusive); default: the end of the key space.
    pub end: Option<String>,
    /// Stop after this many keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Keys per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// Start at the empty key (the system key space of the meta range) when no START is given.
    #[arg(long)]
    pub include_system: bool,
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("expect")
        .required(true)
        .args(["expect_version", "expect_value", "expect_absent"])
))]
pub struct CasArgs {
    pub key: String,
    pub new_value: String,
    /// Write only if the key is at this version.
    #[arg(long)]
    pub expect_version: Option<u64>,
    /// Write only if the key exists with this value.
    #[arg(long)]
    pub expect_value: Option<String>,
    /// Write only if the key does not exist.
    #[arg(long)]
    pub expect_absent: bool,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// A condition: 'KEY = VALUE' or 'KEY version = N' (also !=, <, >); all must hold.
    #[arg(long = "if", value_name = "COMPARE")]
    pub conditions: Vec<String>,
    /// An op of the success branch: put:KEY:VALUE, del:KEY or get:KEY (repeatable).
    #[arg(long = "then", value_name = "OP")]
    pub success: Vec<String>,
    /// An op of the failure branch (same forms as --then).
    #[arg(long = "else", value_name = "OP")]
    pub failure: Vec<String>,
}

/// The first key of the user key space (range 2 at bootstrap): keys below it are the meta
/// range's, and a key given on a command line cannot hold a NUL byte anyway.
const FIRST_USER_KEY: &[u8] = b"\x01";

/// Runs one `kv` command.
pub fn run(cluster: &mut Cluster, cmd: &KvCommand, output: Output) -> anyhow::Result<Report> {
    match cmd {
        KvCommand::Get { key } => get(cluster, key.as_bytes(), output),
        KvCommand::Put { key, value } => put(cluster, key.as_bytes(), value.as_bytes(), output),
        KvCommand::Delete { key } => delete(cluster, key.as_bytes(), output),
        KvCommand::Scan(args) => scan(cluster, args, output),
        KvCommand::Cas(args) => cas(cluster, args, output),
        KvCommand::Txn(args) => txn(cluster, args, output),
        KvCommand::Incr { key, by } => incr(cluster, key.as_bytes(), *by, output),
    }
}

fn check_key(key: &[u8]) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("a key cannot be empty");
    }
    Ok(())
}

fn doc(value: Value) -> String {
    format!("{value}\n")
}

fn get(cluster: &mut Cluster, key: &[u8], output: Output) -> anyhow::Result<Report> {
    check_key(key)?;
    let found = cluster
        .client
        .get(key)
        .with_context(|| format!("get {}", escaped(key)))?;
    Ok(match (found, output) {
        (Some(v), Output::Table) => Report::new(
            table(
                &["KEY", "VALUE", "VERSION"],
                &[vec![escaped(key), escaped(&v.value), v.version.to_string()]],
            ),
            Outcome::Success,
        ),
        (Some(v), Output::Json) => Report::new(
            doc(
                json!({"key": json_text(key), "found": true, "value": json_text(&v.value),
                       "version": v.version.get()}),
            ),
            Outcome::Success,
        ),
        (None, Output::Table) => Report::new("(not found)\n".into(), Outcome::Negative),
        (None, Output::Json) => Report::new(
            doc(json!({"key": json_text(key), "found": false})),
            Outcome::Negative,
        ),
    })
}

fn put(cluster: &mut Cluster, key: &[u8], value: &[u8], output: Output) -> anyhow::Result<Report> {
    check_key(key)?;
    let version = cluster
        .client
        .put(key, value)
        .with_context(|| format!("put {}", escaped(key)))?;
    let text = match output {
        Output::Table => format!("OK (version {version})\n"),
        Output::Json => doc(json!({"key": json_text(key), "version": version.get()})),
    };
    Ok(Report::new(text, Outcome::Success))
}

fn delete(cluster: &mut Cluster, key: &[u8], output: Output) -> anyhow::Result<Report> {
    check_key(key)?;
    let (version, found) = cluster
        .client
        .delete(key)
        .with_context(|| format!("delete {}", escaped(key)))?;
    let text = match output {
        Output::Table if found => format!("deleted (version {version})\n"),
        Output::Table => format!("(not found) (version {version})\n"),
        Output::Json => {
            doc(json!({"key": json_text(key), "found": found, "version": version.get()}))
        }
    };
    Ok(Report::new(text, Outcome::Success))
}

fn incr(cluster: &mut Cluster, key: &[u8], by: i64, output: Output) -> anyhow::Result<Report> {
    check_key(key)?;
    let reply = cluster
        .client
        .execute(Operation::Increment {
            key: key.to_vec(),
            delta: by,
        })
        .with_context(|| format!("incr {}", escaped(key)))?;
    let Reply::Incremented { value, version } = reply else {
        bail!("incr {}: unexpected answer {}", escaped(key), kind(&reply));
    };
    let text = match output {
        Output::Table => format!("{value} (version {version})\n"),
        Output::Json => {
            doc(json!({"key": json_text(key), "value": value, "version": version.get()}))
        }
    };
    Ok(Report::new(text, Outcome::Success))
}

/// The range serving `key`: from the client's cache, else asked of the contacted node.
fn range_of(cluster: &mut Cluster, key: &[u8]) -> anyhow::Result<RangeDescriptor> {
    if let Some(desc) = cluster.client.cache().lookup(key) {
        return Ok(desc.clone());
    }
    let reply = cluster
        .client
        .admin(
            cluster.contact,
            ShardId(0),
            AdminOp::DescribeRange(RangeSelector::Key(key.to_vec())),
        )
        .with_context(|| format!("describe the range of key {}", escaped(key)))?;
    let AdminReply::Range(info) = reply else {
        bail!("DescribeRange answered with {}", reply_kind(&reply));
    };
    if !info.descriptor.contains(key) {
        bail!(
            "DescribeRange for key {} answered range {} [{}, {}), which does not hold it",
            escaped(key),
            info.descriptor.id,
            escaped(&info.descriptor.start),
            escaped(&info.descriptor.end)
        );
    }
    cluster.client.cache_mut().insert(info.descriptor.clone());
    Ok(info.descriptor)
}

fn scan(cluster: &mut Cluster, args: &ScanArgs, output: Output) -> anyhow::Result<Report> {
    let mut start = match &args.start {
        Some(s) => s.as_bytes().to_vec(),
        None if args.include_system => Vec::new(),
        None => FIRST_USER_KEY.to_vec(),
    };
    let end = args.end.as_deref().unwrap_or("").as_bytes().to_vec();
    if !end.is_empty() && end <= start {
        bail!(
            "scan: END {} is not after START {}",
            escaped(&end),
            escaped(&start)
        );
    }
    let mut entries = Vec::new();
    // Where a further page would start, when the limit stopped the scan.
    let mut more: Option<Vec<u8>> = None;
    loop {
        let remaining = args.limit - entries.len() as u64;
        if remaining == 0 {
            more = Some(start);
            break;
        }
        // One request covers one range: clip END to the range's end.
        let range = range_of(cluster, &start)?;
        let page_end = if range.end.is_empty() || (!end.is_empty() && end <= range.end) {
            end.clone()
        } else {
            range.end.clone()
        };
        let count = u32::try_from(remaining)
            .unwrap_or(u32::MAX)
            .min(args.page_size);
        let page = cluster
            .client
            .scan(&start, &page_end, count, 4 << 20)
            .with_context(|| format!("scan from {}", escaped(&start)))?;
        let got = page.entries.len();
        entries.extend(page.entries);
        match page.resume_key {
            Some(resume) if resume > start || got > 0 => start = resume,
            Some(_) => bail!(
                "scan made no progress at {} (the server returned no key and the same resume key)",
                escaped(&start)
            ),
            None if page_end.is_empty() || page_end == end => break,
            None => start = page_end,
        }
    }
    let text = match output {
        Output::Table => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| vec![escaped(&e.key), escaped(&e.value), e.version.to_string()])
                .collect();
            let mut text = table(&["KEY", "VALUE", "VERSION"], &rows);
            let n = entries.len();
            let keys = if n == 1 { "key" } else { "keys" };
            match &more {
                Some(resume) => text.push_str(&format!(
                    "({n} {keys}; limit reached, more from {})\n",
                    escaped(resume)
                )),
                None => text.push_str(&format!("({n} {keys})\n")),
            }
            text
        }
        Output::Json => doc(json!({
            "entries": entries.iter().map(|e| json!({
                "key": json_text(&e.key), "value": json_text(&e.value), "version": e.version.get(),
            })).collect::<Vec<_>>(),
            "count": entries.len(),
            "resume_key": more.as_deref().map(json_text),
        })),
    };
    Ok(Report::new(text, Outcome::Success))
}

fn cas(cluster: &mut Cluster, args: &CasArgs, output: Output) -> anyhow::Result<Report> {
    let key = args.key.as_bytes();
    check_key(key)?;
    let expected = match (&args.expect_version, &args.expect_value, args.expect_absent) {
        (Some(v), None, false) => Expected::Version(KeyVersion(*v)),
        (None, Some(v), false) => Expected::Value(v.as_bytes().to_vec()),
        (None, None, true) => Expected::Version(KeyVersion::ABSENT),
        _ => bail!("cas: give exactly one of --expect-version, --expect-value, --expect-absent"),
    };
    let result = cluster.client.execute(Operation::CompareAndSet {
        key: key.to_vec(),
        expected,
        value: args.new_value.as_bytes().to_vec(),
    });
    match result {
        Ok(Reply::Written { version }) => {
            let text = match output {
                Output::Table => format!("OK (version {version})\n"),
                Output::Json => doc(json!({"key": json_text(key), "succeeded": true,
                                           "version": version.get()})),
            };
            Ok(Report::new(text, Outcome::Success))
        }
        Ok(other) => bail!("cas {}: unexpected answer {}", escaped(key), kind(&other)),
        Err(ClientError::Failed(RequestError::ConditionFailed { current_version })) => {
            let text = match output {
                Output::Table if current_version == KeyVersion::ABSENT => {
                    format!("condition failed: {} does not exist\n", escaped(key))
                }
                Output::Table => format!(
                    "condition failed: {} is at version {current_version}\n",
                    escaped(key)
                ),
                Output::Json => doc(json!({"key": json_text(key), "succeeded": false,
                                           "current_version": current_version.get()})),
            };
            Ok(Report::new(text, Outcome::Negative))
        }
        Err(e) => Err(e).with_context(|| format!("cas {}", escaped(key))),
    }
}

/// Parses `KEY OP VALUE` or `KEY version OP N` (OP one of `=`, `==`, `!=`, `<`, `>`).
pub fn parse_compare(text: &str) -> anyhow::Result<Compare> {
    let bad = || {
        anyhow::anyhow!(
            "bad --if {text:?}: expected 'KEY = VALUE' or 'KEY version = N' (ops =, !=, <, >)"
        )
    };
    let (key, rest) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(bad)?;
    let rest = rest.trim_start();
    let (by_version, rest) = match rest.split_once(char::is_whitespace) {
        Some(("version", r)) => (true, r.trim_start()),
        Some(("value", r)) => (false, r.trim_start()),
        _ => (false, rest),
    };
    let (op, operand) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let op = match op {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(bad()),
    };
    let target = if by_version {
        let n: u64 = operand.trim().parse().map_err(|_| bad())?;
        CompareTarget::Version(KeyVersion(n))
    } else {
        CompareTarget::Value(operand.trim_start().as_bytes().to_vec())
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    })
}

/// Parses `put:KEY:VALUE`, `del:KEY` or `get:KEY` (a key cannot hold `:`, a value can).
pub fn parse_op(text: &str) -> anyhow::Result<TxnOp> {
    let bad = || anyhow::anyhow!("bad txn op {text:?}: expected put:KEY:VALUE, del:KEY or get:KEY");
    let (verb, rest) = text.split_once(':').ok_or_else(bad)?;
    let op = match verb {
        "put" => {
            let (key, value) = rest.split_once(':').ok_or_else(bad)?;
            TxnOp::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            }
        }
        "del" | "delete" => TxnOp::Delete {
            key: rest.as_bytes().to_vec(),
        },
        "get" => TxnOp::Get {
            key: rest.as_bytes().to_vec(),
        },
        _ => return Err(bad()),
    };
    let key = match &op {
        TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        TxnOp::DeleteRange { start, .. } => start,
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(op)
}

fn txn(cluster: &mut Cluster, args: &TxnArgs, output: Output) -> anyhow::Result<Report> {
    let txn = Txn {
        compares: args
            .conditions
            .iter()
            .map(|c| parse_compare(c))
            .collect::<anyhow::Result<_>>()?,
        success: args
            .success
            .iter()
            .map(|o| parse_op(o))
            .collect::<anyhow::Result<_>>()?,
        failure: args
            .failure
            .iter()
            .map(|o| parse_op(o))
            .collect::<anyhow::Result<_>>()?,
    };
    if txn.success.is_empty() && txn.failure.is_empty() {
        bail!("txn: give at least one --then or --else op");
    }
    let reply = cluster
        .client
        .execute(Operation::Txn(txn.clone()))
        .context("txn")?;
    let Reply::Txn(reply) = reply else {
        bail!("txn: unexpected answer {}", kind(&reply));
    };
    let succeeded = reply.branch == TxnBranch::Success;
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    if ops.len() != reply.results.len() {
        bail!(
            "txn: {} results for {} ops of the branch that ran",
            reply.results.len(),
            ops.len()
        );
    }
    let outcome = if succeeded {
        Outcome::Success
    } else {
        Outcome::Negative
    };
    let text = match output {
        Output::Table => {
            let mut text = if succeeded {
                format!("SUCCESS (version {})\n", reply.version)
            } else {
                "condition failed: the --else branch ran\n".to_string()
            };
            for (op, result) in ops.iter().zip(&reply.results) {
                text.push_str(&describe_result(op, result));
                text.push('\n');
            }
            text
        }
        Output::Json => doc(json!({
            "succeeded": succeeded,
            "version": reply.version.get(),
            "results": ops.iter().zip(&reply.results)
                .map(|(op, r)| result_json(op, r)).collect::<Vec<_>>(),
        })),
    };
    Ok(Report::new(text, outcome))
}

fn describe_result(op: &TxnOp, result: &TxnOpResult) -> String {
    match (op, result) {
        (TxnOp::Get { key }, TxnOpResult::Get(Some(VersionedValue { value, version }))) => {
            format!(
                "get {}: {} (version {version})",
                escaped(key),
                escaped(value)
            )
        }
        (TxnOp::Get { key }, TxnOpResult::Get(None)) => {
            format!("get {}: (not found)", escaped(key))
        }
        (TxnOp::Put { key, .. }, _) => format!("put {}: OK", escaped(key)),
        (TxnOp::Delete { key }, TxnOpResult::Delete { found: true }) => {
            format!("del {}: deleted", escaped(key))
        }
        (TxnOp::Delete { key }, _) => format!("del {}: (not found)", escaped(key)),
        (TxnOp::DeleteRange { start, end }, TxnOpResult::DeleteRange { deleted_count }) => format!(
            "delrange {}..{}: {deleted_count} deleted",
            escaped(start),
            escaped(end)
        ),
        (TxnOp::Get { key } | TxnOp::DeleteRange { start: key, .. }, _) => {
            format!("{}: unexpected result", escaped(key))
        }
    }
}

fn result_json(op: &TxnOp, result: &TxnOpResult) -> Value {
    match (op, result) {
        (TxnOp::Get { key }, TxnOpResult::Get(Some(v))) => json!({"op": "get",
            "key": json_text(key), "found": true, "value": json_text(&v.value),
            "version": v.version.get()}),
        (TxnOp::Get { key }, _) => json!({"op": "get", "key": json_text(key), "found": false}),
        (TxnOp::Put { key, .. }, _) => json!({"op": "put", "key": json_text(key)}),
        (TxnOp::Delete { key }, r) => json!({"op": "delete", "key": json_text(key),
            "found": matches!(r, TxnOpResult::Delete { found: true })}),
        (TxnOp::DeleteRange { start, end }, r) => json!({"op": "delete_range",
            "start": json_text(start), "end": json_text(end),
            "deleted_count": match r { TxnOpResult::DeleteRange { deleted_count } => *deleted_count, _ => 0 }}),
    }
}

/// The name of a reply's kind (never the whole Debug: errors stay one short line).
fn kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Get(_) => "Get",
        Reply::Written { .. } => "Written",
        Reply::Deleted { .. } => "Deleted",
        Reply::DeletedRange { .. } => "DeletedRange",
        Reply::Scan(_) => "Scan",
        Reply::Txn(_) => "Txn",
        Reply::Incremented { .. } => "Incremented",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_parse() {
        let c = parse_compare("k = hello world").expect("value compare");
        assert_eq!(c.key, b"k");
        assert_eq!(c.op, CompareOp::Equal);
        assert_eq!(c.target, CompareTarget::Value(b"hello world".to_vec()));
        let c = parse_compare("k version > 7").expect("version compare");
        assert_eq!(c.op, CompareOp::Greater);
        assert_eq!(c.target, CompareTarget::Version(KeyVersion(7)));
        let c = parse_compare("k value != x").expect("explicit value compare");
        assert_eq!(c.op, CompareOp::NotEqual);
        assert_eq!(c.target, CompareTarget::Value(b"x".to_vec()));
        assert!(parse_compare("k").is_err());
        assert!(parse_compare("k ~ v").is_err());
        assert!(parse_compare("k version = x").is_err());
    }

    #[test]
    fn ops_parse() {
        assert_eq!(
            parse_op("put:a:b:c").expect("put"),
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"b:c".to_vec()
            }
        );
        assert_eq!(
            parse_op("del:a").expect("del"),
            TxnOp::Delete { key: b"a".to_vec() }
        );
        assert_eq!(
            parse_op("get:a").expect("get"),
            TxnOp::Get { key: b"a".to_vec() }
        );
        assert!(parse_op("put:a").is_err());
        assert!(parse_op("get:").is_err());
        assert!(parse_op("frob:a").is_err());
    }
}
