//! containerd → `containerd-shim-ward-v2` → ward-agent, end to end with a real containerd,
//! the real shim, agent and VMM binaries, and real containers (root). One suite, run twice:
//! `shared::*` on this host's kernel, `nest_vm::*` in vm isolation, each scenario in L1 of
//! the nested harness, where KVM boots the guest kernel.

mod bench;
mod exec;
mod faults;
mod harness;
mod lifecycle;
mod limits;

/// Each scenario as a `shared::` test and a `nest_vm::` test.
macro_rules! suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod shared {
            $(
                #[test]
                fn $name() {
                    crate::harness::on_host(stringify!($name), crate::$module::$name);
                }
            )*
        }
        mod nest_vm {
            $(
                #[test]
                fn $name() {
                    crate::harness::in_vm(stringify!($name), crate::$module::$name);
                }
            )*
        }
    };
}

suite! {
    lifecycle::run_prints_output_and_returns_exit_codes,
    lifecycle::container_sees_the_kernel_of_its_isolation,
    lifecycle::detached_task_ps_pause_resume_metrics_kill_delete,
    lifecycle::run_killed_with_sigkill_exits_137,
    lifecycle::run_with_tty,
    lifecycle::containers_in_a_loop_leave_nothing_behind,
    lifecycle::log_uris_file_and_binary_receive_the_output,
    exec::exec_with_and_without_tty_and_as_another_user,
    exec::containers_of_a_cri_sandbox_share_one_shim_and_agent,
    limits::run_options_env_cwd_read_only_bind_mount_cpus,
    limits::memory_limit_oom_gives_task_oom_and_137,
    limits::update_changes_the_running_containers_limits,
    faults::sigkilled_shim_is_cleaned_up_by_shim_delete,
    faults::a_dead_agent_or_vmm_takes_its_containers_down_and_leaves_nothing,
    bench::bench_ctr_run_rm_true_against_runc,
}

/// Host only: which isolation a container gets.
#[test]
fn isolation_comes_from_the_config_file_and_the_annotation() {
    harness::on_host(
        "isolation_comes_from_the_config_file_and_the_annotation",
        faults::isolation_comes_from_the_config_file_and_the_annotation,
    );
}
