//! `quasarctl range ...` and `quasarctl node list`: the range table and range changes
//! (split, merge, replica move, leadership transfer) through `quasar_rpc::client::AdminClient`, which
//! routes each change to the range's leader and follows its hints.
//!
//! A change shows its plan first: the range as it is now (its epoch is the one the request
//! names, so a range that changed in between is refused, not changed blindly) and the
//! predicted result. `--dry-run` stops there; otherwise the change needs a "y" on a terminal,
//! or `--yes` when stdin is not one. A refusal (stale epoch, the server's `Refused`, a bad
//! split key, a change already in progress) is one line on stderr and exit 1.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use quasar_rpc::client::admin::{plan_merge, predict_move, predict_split, AdminClient, AdminError};
use quasar_rpc::client::BlockingClient;
use quasar_rpc::message::{
    AdminOp, AdminReply, NodeId, RangeDescriptor, RangeId, RangeInfo, ReplicaRole, ShardId,
};
use serde_json::{json, Value};

use crate::cluster::{reply_kind, Cluster};
use crate::status::{role_name, state_name};
use crate::{escaped, table, Outcome, Output, Refusal, Report};

/// `quasarctl range ...`
#[derive(Subcommand, Debug)]
pub enum RangeCommand {
    /// Every range in key order: span, epoch, replicas, leader.
    List,
    /// One range.
    Show {
        /// The range id.
        id: u64,
    },
    /// Split a range: `split ID --at KEY`, or `split --key KEY` (the range holding KEY, at
    /// KEY). The right-hand range gets a new id from the server.
    Split(SplitArgs),
    /// Merge range LEFT_ID with the range right after it (moving that range's leadership to
    /// LEFT_ID's leader first when they differ).
    Merge(MergeArgs),
    /// Move a range's replica from one node to another: the new replica joins as a
    /// learner, catches up by snapshot, becomes a voter as the old one leaves (joint
    /// consensus), and the old node deletes its copy.
    Move(MoveArgs),
    /// Move a range's leadership to another voter.
    TransferLeader(TransferArgs),
}

/// `quasarctl node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// The cluster's members: id, address, and whether each answers.
    List,
}

/// Flags of every range change.
#[derive(Args, Debug, Clone, Copy)]
pub struct ChangeFlags {
    /// Print the plan and the predicted result; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("where").required(true).args(["at", "key"])))]
pub struct SplitArgs {
    /// The range to split (with --at).
    #[arg(requires = "at")]
    pub id: Option<u64>,
    /// First key of the new right-hand range.
    #[arg(long, value_name = "KEY", requires = "id")]
    pub at: Option<String>,
    /// Split the range holding KEY at KEY.
    #[arg(long, value_name = "KEY", conflicts_with = "id")]
    pub key: Option<String>,
    #[command(flatten)]
    pub change: ChangeFlags,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The left range (it survives, with the right one's keys added).
    pub left_id: u64,
    #[command(flatten)]
    pub change: ChangeFlags,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The range.
    pub id: u64,
    /// The node to lead it (a voter of the range).
    #[arg(long, value_name = "NODE")]
    pub to: u64,
    #[command(flatten)]
    pub change: ChangeFlags,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    /// The range.
    pub id: u64,
    /// The node losing its replica.
    #[arg(long, value_name = "NODE")]
    pub from: u64,
    /// The node gaining one (a member without a replica of the range).
    #[arg(long, value_name = "NODE")]
    pub to: u64,
    #[command(flatten)]
    pub change: ChangeFlags,
}

impl RangeCommand {
    /// The change flags, for commands that change something.
    pub fn change(&self) -> Option<ChangeFlags> {
        match self {
            RangeCommand::List | RangeCommand::Show { .. } => None,
            RangeCommand::Split(a) => Some(a.change),
            RangeCommand::Merge(a) => Some(a.change),
            RangeCommand::Move(a) => Some(a.change),
            RangeCommand::TransferLeader(a) => Some(a.change),
        }
    }
}

/// Refuses a change from a script without `--yes` (checked before anything is contacted).
pub fn check_confirmation(flags: ChangeFlags) -> anyhow::Result<()> {
    if !flags.dry_run && !flags.yes && !std::io::stdin().is_terminal() {
        anyhow::bail!("add --yes to change ranges from a script (or --dry-run to see the plan)");
    }
    Ok(())
}

/// How long a node's view of ranges may lag behind a change (it publishes it periodically).
const VIEW_LAG: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs one `range` command.
pub fn run(cluster: &mut Cluster, cmd: &RangeCommand, output: Output) -> anyhow::Result<Report> {
    let mut admin = AdminClient::new(cluster.config.clone()).with_contact(cluster.contact);
    match cmd {
        RangeCommand::List => {
            let ranges = admin.list_ranges().map_err(admin_error)?;
            Ok(Report::new(
                match output {
                    Output::Table => ranges_table(&ranges),
                    Output::Json => doc(Value::Array(ranges.iter().map(range_json).collect())),
                },
                Outcome::Success,
            ))
        }
        RangeCommand::Show { id } => {
            let info = admin.describe(RangeId(*id)).map_err(admin_error)?;
            Ok(Report::new(
                match output {
                    Output::Table => ranges_table(std::slice::from_ref(&info)),
                    Output::Json => doc(range_json(&info)),
                },
                Outcome::Success,
            ))
        }
        RangeCommand::Split(args) => split(&mut admin, args, output),
        RangeCommand::Merge(args) => merge(&mut admin, args, output),
        RangeCommand::Move(args) => move_replica(&mut admin, args, output),
        RangeCommand::TransferLeader(args) => transfer(&mut admin, args, output),
    }
}

/// A refusal exits 1 with its line; anything else is a failure to run (exit 2).
fn admin_error(e: AdminError) -> anyhow::Error {
    if e.is_refusal() {
        anyhow::Error::new(Refusal(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

fn doc(value: Value) -> String {
    format!("{value}\n")
}

fn span(d: &RangeDescriptor) -> String {
    let end = if d.end.is_empty() {
        "+inf".to_string()
    } else {
        format!("\"{}\"", escaped(&d.end))
    };
    format!("[\"{}\", {end})", escaped(&d.start))
}

fn replicas(d: &RangeDescriptor) -> String {
    d.replicas
        .iter()
        .map(|x| match x.role {
            ReplicaRole::Voter => x.node.to_string(),
            ReplicaRole::Learner => format!("{}(learner)", x.node),
            ReplicaRole::Joining => format!("{}(joining)", x.node),
            ReplicaRole::Leaving => format!("{}(leaving)", x.node),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Ranges as a table (also `quasarctl status`'s range table).
pub(crate) fn ranges_table(ranges: &[RangeInfo]) -> String {
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|r| {
            let d = &r.descriptor;
            vec![
                d.id.to_string(),
                d.group.to_string(),
                span(d),
                d.epoch.to_string(),
                replicas(d),
                r.leader.map_or("-".into(), |l| l.to_string()),
                r.commit.map_or("-".into(), |c| c.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "RANGE", "GROUP", "SPAN", "EPOCH", "REPLICAS", "LEADER", "COMMIT",
        ],
        &rows,
    )
}

/// A descriptor as JSON (start and end as `quasarctl status` and the node's HTTP `/status`
/// write them: `escape_ascii`d).
fn descriptor_json(d: &RangeDescriptor) -> Value {
    json!({
        "id": d.id.get(),
        "group": d.group.get(),
        "start": escaped(&d.start),
        "end": escaped(&d.end),
        "epoch": d.epoch.get(),
        "replicas": d.replicas.iter()
            .map(|x| json!({"node": x.node.get(), "role": role_name(x.role)}))
            .collect::<Vec<_>>(),
    })
}

fn range_json(info: &RangeInfo) -> Value {
    let mut v = descriptor_json(&info.descriptor);
    v["leader"] = json!(info.leader.map(|l| l.get()));
    v["commit"] = json!(info.commit.map(|c| c.get()));
    v
}

/// A predicted right-hand range: its id and group are the server's to assign.
fn predicted_right_json(d: &RangeDescriptor) -> Value {
    let mut v = descriptor_json(d);
    v["id"] = Value::Null;
    v["group"] = Value::Null;
    v["epoch"] = Value::Null;
    v["note"] = json!("new id assigned by the server");
    v
}

/// Asks on the terminal (stdin is one: `check_confirmation` ran); the plan is on stderr.
fn confirm(flags: ChangeFlags, plan: &str, question: &str) -> anyhow::Result<()> {
    if flags.yes {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{plan}{question} [y/N] ").context("cannot write to stderr")?;
    err.flush().context("cannot write to stderr")?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Refusal("not confirmed: nothing changed".into()).into())
    }
}

fn dry_run_report(plan: String, json_plan: Value, output: Output) -> Report {
    Report::new(
        match output {
            Output::Table => format!("{plan}dry run: nothing changed\n"),
            Output::Json => doc(json_plan),
        },
        Outcome::Success,
    )
}

fn split(admin: &mut AdminClient, args: &SplitArgs, output: Output) -> anyhow::Result<Report> {
    let key = match (args.id, &args.at, &args.key) {
        (Some(_), Some(at), None) => at.as_bytes().to_vec(),
        (None, None, Some(key)) => key.as_bytes().to_vec(),
        _ => anyhow::bail!("pass either `range split ID --at KEY` or `range split --key KEY`"),
    };
    // The plan shows the range as its leader sees it (`fresh`): the epoch the change names
    // is the latest one, not a lagging node's.
    let look = |admin: &mut AdminClient| -> anyhow::Result<RangeInfo> {
        let info = match args.id {
            Some(id) => admin.describe(RangeId(id)),
            None => admin.describe_key(&key),
        }
        .map_err(admin_error)?;
        Ok(admin.fresh(info))
    };
    let mut info = look(admin)?;
    if predict_split(&info.descriptor, &key).is_err() {
        // Nodes publish their view of ranges a moment after a change: a split or merge
        // just made may not show yet. Look once more before refusing.
        std::thread::sleep(VIEW_LAG);
        info = look(admin)?;
    }
    let d = &info.descriptor;
    let (left, right) = predict_split(d, &key).map_err(admin_error)?;
    let plan = format!(
        "split range {} {} (epoch {}, leader {}) at \"{}\":\n  left:  range {} {}\n  right: \
         new range {} (new id assigned by the server), replicas {}\n",
        d.id,
        span(d),
        d.epoch,
        info.leader.map_or("unknown".into(), |l| l.to_string()),
        escaped(&key),
        left.id,
        span(&left),
        span(&right),
        replicas(&right),
    );
    if args.change.dry_run {
        let json_plan = json!({
            "dry_run": true, "op": "split", "range": range_json(&info),
            "split_key": escaped(&key),
            "predicted": {"left": descriptor_json(&left), "right": predicted_right_json(&right)},
        });
        return Ok(dry_run_report(plan, json_plan, output));
    }
    confirm(args.change, &plan, "split?")?;
    let (left, right) = admin.split_seen(info, &key).map_err(admin_error)?;
    Ok(Report::new(
        match output {
            Output::Table => format!(
                "split: range {} {} (epoch {}) and new range {} {} (epoch {})\n",
                left.id,
                span(&left),
                left.epoch,
                right.id,
                span(&right),
                right.epoch
            ),
            Output::Json => doc(json!({
                "op": "split", "left": descriptor_json(&left), "right": descriptor_json(&right),
            })),
        },
        Outcome::Success,
    ))
}

fn merge(admin: &mut AdminClient, args: &MergeArgs, output: Output) -> anyhow::Result<Report> {
    let look = |admin: &mut AdminClient| -> anyhow::Result<(RangeInfo, RangeInfo)> {
        let left = admin.describe(RangeId(args.left_id)).map_err(admin_error)?;
        let left = admin.fresh(left);
        let next = left.descriptor.end.clone();
        let right = if next.is_empty() {
            left.clone()
        } else {
            let asked = left.leader.unwrap_or(admin.contact());
            admin.describe_key_at(asked, &next).map_err(admin_error)?
        };
        Ok((left, right))
    };
    let (mut left, mut right) = look(admin)?;
    if plan_merge(&left, &right).is_err() {
        // A split just made may not show yet (see `VIEW_LAG`).
        std::thread::sleep(VIEW_LAG);
        (left, right) = look(admin)?;
    }
    let plan = plan_merge(&left, &right).map_err(admin_error)?;
    let (l, r) = (&left.descriptor, &right.descriptor);
    let leader = |i: &RangeInfo| i.leader.map_or("unknown".into(), |l| l.to_string());
    let mut text = format!(
        "merge range {} {} (epoch {}, leader {}) with range {} {} (epoch {}, leader {}):\n",
        l.id,
        span(l),
        l.epoch,
        leader(&left),
        r.id,
        span(r),
        r.epoch,
        leader(&right)
    );
    if let Some((range, to)) = plan.transfer {
        text.push_str(&format!(
            "  first: move range {range}'s leadership to node {to} (the left range's leader)\n"
        ));
    }
    text.push_str(&format!(
        "  result: range {} {}, replicas {}\n",
        plan.merged.id,
        span(&plan.merged),
        replicas(&plan.merged)
    ));
    if args.change.dry_run {
        let json_plan = json!({
            "dry_run": true, "op": "merge", "left": range_json(&left), "right": range_json(&right),
            "transfer_first": plan.transfer.map(|(range, to)| json!({"range": range.get(), "to": to.get()})),
            "predicted": descriptor_json(&plan.merged),
        });
        return Ok(dry_run_report(text, json_plan, output));
    }
    confirm(args.change, &text, "merge?")?;
    let merged = admin.merge_seen(left).map_err(admin_error)?;
    let m = &merged.merged;
    Ok(Report::new(
        match output {
            Output::Table => {
                let mut out = String::new();
                if let Some((range, from, to)) = merged.transferred {
                    out.push_str(&format!(
                        "moved range {range}'s leadership from node {} to node {to}\n",
                        from.map_or("unknown".into(), |f| f.to_string())
                    ));
                }
                out.push_str(&format!(
                    "merged: range {} {} (epoch {})\n",
                    m.id,
                    span(m),
                    m.epoch
                ));
                out
            }
            Output::Json => doc(json!({
                "op": "merge", "merged": descriptor_json(m),
                "transferred": merged.transferred.map(|(range, from, to)| json!({
                    "range": range.get(), "from": from.map(|f| f.get()), "to": to.get()})),
            })),
        },
        Outcome::Success,
    ))
}

fn move_replica(
    admin: &mut AdminClient,
    args: &MoveArgs,
    output: Output,
) -> anyhow::Result<Report> {
    let info = admin.describe(RangeId(args.id)).map_err(admin_error)?;
    let info = admin.fresh(info);
    let (from, to) = (NodeId(args.from), NodeId(args.to));
    let d = &info.descriptor;
    predict_move(d, from, to).map_err(admin_error)?;
    if !admin
        .members()
        .map_err(admin_error)?
        .iter()
        .any(|m| m.node == to)
    {
        return Err(Refusal(format!(
            "refused: node {to} is not a member of the cluster (see `quasarctl node list`)"
        ))
        .into());
    }
    let mut after = d.clone();
    after.replicas.retain(|r| r.node != from && r.node != to);
    after.replicas.push(quasar_rpc::message::ReplicaDescriptor {
        node: to,
        role: ReplicaRole::Voter,
    });
    after.replicas.sort_by_key(|r| r.node);
    let plan = format!(
        "move range {} {}'s replica from node {from} to node {to}\n  now:   replicas {} (epoch {})\n  after: replicas {}\n",
        d.id,
        span(d),
        replicas(d),
        d.epoch,
        replicas(&after),
    );
    if args.change.dry_run {
        let json_plan = json!({
            "dry_run": true, "op": "move", "range": range_json(&info),
            "from": from.get(), "to": to.get(),
            "predicted_replicas": after.replicas.iter().map(|r| r.node.get()).collect::<Vec<_>>(),
        });
        return Ok(dry_run_report(plan, json_plan, output));
    }
    confirm(args.change, &plan, "move?")?;
    let moved = admin.move_seen(info, from, to).map_err(admin_error)?;
    let now = RangeInfo {
        descriptor: moved,
        leader: None,
        commit: None,
    };
    Ok(Report::new(
        match output {
            Output::Table => format!(
                "range {} is on nodes {} (epoch {})\n",
                now.descriptor.id,
                replicas(&now.descriptor),
                now.descriptor.epoch
            ),
            Output::Json => doc(json!({"op": "move", "range": range_json(&now)})),
        },
        Outcome::Success,
    ))
}

fn transfer(
    admin: &mut AdminClient,
    args: &TransferArgs,
    output: Output,
) -> anyhow::Result<Report> {
    let info = admin.describe(RangeId(args.id)).map_err(admin_error)?;
    let info = admin.fresh(info);
    let to = NodeId(args.to);
    let d = &info.descriptor;
    if !d.voters().any(|n| n == to) {
        return Err(Refusal(format!(
            "refused: node {to} holds no voting replica of range {} (replicas: {})",
            d.id,
            replicas(d)
        ))
        .into());
    }
    let plan = format!(
        "move range {} {}'s leadership from node {} to node {to}\n",
        d.id,
        span(d),
        info.leader.map_or("unknown".into(), |l| l.to_string())
    );
    if args.change.dry_run {
        let json_plan = json!({
            "dry_run": true, "op": "transfer-leader", "range": range_json(&info), "to": to.get(),
        });
        return Ok(dry_run_report(plan, json_plan, output));
    }
    confirm(args.change, &plan, "transfer?")?;
    let range = d.id;
    let leader = admin.transfer_seen(info, to).map_err(admin_error)?;
    Ok(Report::new(
        match output {
            Output::Table => format!("range {range} is led by node {leader}\n"),
            Output::Json => doc(json!({"op": "transfer-leader", "range": range.get(),
                                       "leader": leader.get()})),
        },
        Outcome::Success,
    ))
}

/// Attempts per member for `node list`: a node that is down is reported, not waited for.
const PROBE_ATTEMPTS: u32 = 2;

/// `quasarctl node list`: exit 1 when a member does not answer.
pub fn node_list(cluster: &mut Cluster, output: Output) -> anyhow::Result<Report> {
    let mut config = cluster.config.clone();
    config.max_attempts = PROBE_ATTEMPTS;
    let mut probe = BlockingClient::new(config);
    let mut rows = Vec::new();
    for member in &cluster.members {
        let reachable = if member.node == cluster.contact {
            Ok(())
        } else if !cluster.config.nodes.iter().any(|(n, _)| *n == member.node) {
            Err(format!("address {:?} does not resolve", member.address))
        } else {
            match probe.admin(member.node, ShardId(0), AdminOp::Status) {
                Ok(AdminReply::Status(_)) => Ok(()),
                Ok(other) => Err(format!("answered Status with {}", reply_kind(&other))),
                Err(e) => Err(e.to_string()),
            }
        };
        rows.push((member, reachable));
    }
    let outcome = if rows.iter().all(|(_, r)| r.is_ok()) {
        Outcome::Success
    } else {
        Outcome::Negative
    };
    let text = match output {
        Output::Table => table(
            &["NODE", "ADDRESS", "STATE", "REACHABLE"],
            &rows
                .iter()
                .map(|(m, r)| {
                    vec![
                        m.node.to_string(),
                        m.address.clone(),
                        state_name(m.state).to_string(),
                        match r {
                            Ok(()) => "yes".to_string(),
                            Err(e) => format!("no: {e}"),
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Output::Json => doc(Value::Array(
            rows.iter()
                .map(|(m, r)| {
                    let mut v = json!({"id": m.node.get(), "address": m.address,
                                       "state": state_name(m.state), "reachable": r.is_ok()});
                    if let Err(e) = r {
                        v["error"] = json!(e);
                    }
                    v
                })
                .collect(),
        )),
    };
    Ok(Report::new(text, outcome))
}
