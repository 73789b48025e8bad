//! The built-in RuntimeDefault profile, kept as data in `default.toml`
//! (see its header for the format) and turned into a [`Profile`] here, so
//! it goes through exactly the checks and condition evaluation a
//! Localhost profile does.

use oci_spec::runtime::{
    Arch, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
};
use serde::Deserialize;

use super::Error;
use super::profile::{ArchMap, Condition, Profile, Rule};

const SOURCE: &str = include_str!("default.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    errno: u32,
    rule: Vec<DefaultRule>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Allow,
    Errno,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultRule {
    syscalls: Vec<String>,
    #[serde(default)]
    action: Action,
    errno: Option<u32>,
    needs_cap: Option<String>,
    lacks_cap: Option<String>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
    arg: Option<usize>,
    equals_any: Option<Vec<u64>>,
    mask_clear: Option<u64>,
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64, value_two: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(value_two)
        .build()
        .unwrap_or_default()
}

/// The native architectures and the ones their kernels also run.
fn arch_map() -> Vec<ArchMap> {
    let entry = |architecture, subs: &[Arch]| ArchMap {
        architecture,
        sub_architectures: Some(subs.to_vec()),
    };
    vec![
        entry(
            Arch::ScmpArchX86_64,
            &[Arch::ScmpArchX86, Arch::ScmpArchX32],
        ),
        entry(Arch::ScmpArchAarch64, &[Arch::ScmpArchArm]),
        entry(Arch::ScmpArchRiscv64, &[]),
        entry(Arch::ScmpArchS390x, &[Arch::ScmpArchS390]),
        entry(Arch::ScmpArchPpc64le, &[]),
    ]
}

/// The RuntimeDefault profile.
pub fn runtime_default() -> Result<Profile, Error> {
    let file: File = toml::from_str(SOURCE).map_err(|e| Error::Parse {
        origin: "the built-in RuntimeDefault profile".to_string(),
        detail: e.to_string(),
    })?;
    let mut syscalls = Vec::new();
    for r in file.rule {
        let (action, errno_ret) = match r.action {
            Action::Allow => (LinuxSeccompAction::ScmpActAllow, None),
            Action::Errno => (LinuxSeccompAction::ScmpActErrno, r.errno),
        };
        let includes = Condition {
            caps: r.needs_cap.map(|c| vec![c]),
            arches: r.arches,
            min_kernel: r.min_kernel,
        };
        let excludes = Condition {
            caps: r.lacks_cap.map(|c| vec![c]),
            ..Default::default()
        };
        // Each argument set is its own rule: any of them allows the call.
        let arg_sets: Vec<Option<Vec<LinuxSeccompArg>>> = match (r.arg, r.equals_any, r.mask_clear)
        {
            (Some(i), Some(values), None) => values
                .into_iter()
                .map(|v| Some(vec![arg(i, LinuxSeccompOperator::ScmpCmpEq, v, 0)]))
                .collect(),
            (Some(i), None, Some(mask)) => vec![Some(vec![arg(
                i,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                mask,
                0,
            )])],
            (None, None, None) => vec![None],
            _ => {
                return Err(Error::Invalid(format!(
                    "built-in rule for {:?}: `arg` needs exactly one of `equals_any`, `mask_clear`",
                    r.syscalls
                )));
            }
        };
        for args in arg_sets {
            syscalls.push(Rule {
                names: Some(r.syscalls.clone()),
                name: None,
                action,
                errno_ret,
                args,
                includes: Some(includes.clone()),
                // `lacks_cap`: skipped when the container has it.
                excludes: Some(excludes.clone()),
            });
        }
    }
    Ok(Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(file.errno),
        architectures: None,
        arch_map: Some(arch_map()),
        flags: None,
        listener_path: None,
        syscalls: Some(syscalls),
    })
}
