//! `linux.seccomp` compiled to BPF with seccompiler and loaded just before exec.
//!
//! seccompiler gives one filter a single match and a single mismatch action, while OCI gives
//! each syscall rule its own. The kernel runs every loaded filter and keeps the most
//! restrictive verdict, so the profile becomes a stack: one filter per distinct rule action
//! (matching rules → that action, anything else → allow) plus one for the default action
//! (every syscall a rule mentions, under the same argument conditions → allow, anything else
//! → the default). Syscall names this architecture lacks are skipped, as libseccomp does.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

use super::error::{Error, Result};

const EPERM: u32 = 1;

/// The seccompiler JSON form of an OCI action.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Value> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({ "errno": errno.unwrap_or(EPERM) }),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({ "trace": errno.unwrap_or(EPERM) }),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp("SCMP_ACT_NOTIFY is not supported".into()));
        }
    })
}

/// The seccompiler argument conditions of one OCI rule.
fn conditions(rule: &LinuxSyscall) -> Vec<Value> {
    rule.args()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let (op, val) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (json!("le"), a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), a.value()),
                // OCI: value is the mask, valueTwo the datum.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    json!({ "masked_eq": a.value() }),
                    a.value_two().unwrap_or(0),
                ),
            };
            json!({ "index": a.index(), "type": "qword", "op": op, "val": val })
        })
        .collect()
}

fn arch() -> Result<TargetArch> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        Error::Seccomp(format!(
            "architecture {} not supported",
            std::env::consts::ARCH
        ))
    })
}

fn compile(name: &str, mismatch: &Value, matched: &Value, rules: &[Value]) -> Result<BpfProgram> {
    let doc =
        json!({ name: { "mismatch_action": mismatch, "match_action": matched, "filter": rules } });
    let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch()?)
        .map_err(|e| Error::Seccomp(format!("compiling filter {name}: {e}")))?;
    Ok(map.remove(name).unwrap_or_default())
}

/// Whether seccompiler knows `name` on this architecture.
fn known(name: &str) -> bool {
    compile(
        "probe",
        &json!("allow"),
        &json!({ "errno": EPERM }),
        &[json!({ "syscall": name })],
    )
    .is_ok()
}

/// Entries for `rules` (name → list of condition sets, an empty set meaning "always").
fn entries(rules: &BTreeMap<String, Vec<Vec<Value>>>) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, sets) in rules {
        if sets.iter().any(Vec::is_empty) {
            out.push(json!({ "syscall": name }));
        } else {
            out.extend(sets.iter().map(|c| json!({ "syscall": name, "args": c })));
        }
    }
    out
}

/// Compiles a profile into the filters to load, in load order.
pub fn compile_profile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // action (as JSON text) → syscall → condition sets
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Vec<Value>>>> = BTreeMap::new();
    let mut mentioned: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue; // same as no rule at all
        }
        for name in rule.names() {
            if !known(name) {
                unknown.push(name.clone());
                continue;
            }
            let cond = conditions(rule);
            mentioned
                .entry(name.clone())
                .or_default()
                .push(cond.clone());
            groups
                .entry(act.to_string())
                .or_default()
                .entry(name.clone())
                .or_default()
                .push(cond);
        }
    }
    if !unknown.is_empty() {
        log::warn!(
            "seccomp: skipping syscalls unknown on {}: {}",
            std::env::consts::ARCH,
            unknown.join(", ")
        );
    }
    let allow = json!("allow");
    let mut out = Vec::new();
    for (i, (act, rules)) in groups.iter().enumerate() {
        let act: Value = serde_json::from_str(act).map_err(|e| Error::Seccomp(e.to_string()))?;
        if act != allow {
            out.push(compile(&format!("rule{i}"), &allow, &act, &entries(rules))?);
        }
    }
    if default != allow {
        out.push(compile("default", &default, &allow, &entries(&mentioned))?);
    }
    Ok(out)
}

/// Loads compiled filters into the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn load(filters: &[BpfProgram]) -> Result<()> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| Error::Seccomp(format!("loading filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn errno_rule_with_allow_default_makes_one_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        );
        assert_eq!(compile_profile(&p).unwrap().len(), 1);
    }

    #[test]
    fn allow_list_with_errno_default_makes_one_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert_eq!(compile_profile(&p).unwrap().len(), 1);
    }

    #[test]
    fn notify_is_refused_by_name() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(
            compile_profile(&p)
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_NOTIFY")
        );
    }
}
