//! The agent's normalized cgroup statistics as the metrics type containerd expects for the
//! cgroup version in use: `io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use ward_agent::protocol::agent::StatsContainerResponse;

/// Packs `s` as containerd's metrics `Any` for its cgroup version.
pub fn to_any(s: &StatsContainerResponse) -> Result<Any, protobuf::Error> {
    if s.cgroup_version == 2 {
        let m = v2_metrics(s);
        pack(&m, "io.containerd.cgroups.v2.Metrics")
    } else {
        let m = v1_metrics(s);
        pack(&m, "io.containerd.cgroups.v1.Metrics")
    }
}

fn pack(m: &dyn protobuf::MessageDyn, type_url: &str) -> Result<Any, protobuf::Error> {
    let mut any = Any::new();
    type_url.clone_into(&mut any.type_url);
    any.value = m.write_to_bytes_dyn()?;
    Ok(any)
}

pub fn v1_metrics(s: &StatsContainerResponse) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    let mut pids = v1::PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit;
    m.pids = Some(pids).into();

    let mut usage = v1::CPUUsage::new();
    usage.total = s.cpu_usage_ns;
    usage.user = s.cpu_user_ns;
    usage.kernel = s.cpu_system_ns;
    let mut throttling = v1::Throttle::new();
    throttling.throttled_periods = s.cpu_throttled_periods;
    throttling.throttled_time = s.cpu_throttled_ns;
    let mut cpu = v1::CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttling).into();
    m.cpu = Some(cpu).into();

    let mut entry = v1::MemoryEntry::new();
    entry.usage = s.memory_usage_bytes;
    entry.max = s.memory_max_usage_bytes;
    entry.limit = s.memory_limit_bytes;
    let mut memory = v1::MemoryStat::new();
    memory.cache = s.memory_cache_bytes;
    memory.total_cache = s.memory_cache_bytes;
    memory.usage = Some(entry).into();
    m.memory = Some(memory).into();

    let mut oom = v1::MemoryOomControl::new();
    oom.oom_kill = s.oom_kills;
    m.memory_oom_control = Some(oom).into();

    let mut blkio = v1::BlkIOStat::new();
    for (op, value) in [("Read", s.io_read_bytes), ("Write", s.io_write_bytes)] {
        let mut e = v1::BlkIOEntry::new();
        e.op = op.into();
        e.value = value;
        blkio.io_service_bytes_recursive.push(e);
    }
    for (op, value) in [("Read", s.io_read_ops), ("Write", s.io_write_ops)] {
        let mut e = v1::BlkIOEntry::new();
        e.op = op.into();
        e.value = value;
        blkio.io_serviced_recursive.push(e);
    }
    m.blkio = Some(blkio).into();
    m
}

pub fn v2_metrics(s: &StatsContainerResponse) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut pids = v2::PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit;
    m.pids = Some(pids).into();

    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = s.cpu_usage_ns / 1000;
    cpu.user_usec = s.cpu_user_ns / 1000;
    cpu.system_usec = s.cpu_system_ns / 1000;
    cpu.nr_throttled = s.cpu_throttled_periods;
    cpu.throttled_usec = s.cpu_throttled_ns / 1000;
    m.cpu = Some(cpu).into();

    let mut memory = v2::MemoryStat::new();
    memory.usage = s.memory_usage_bytes;
    memory.max_usage = s.memory_max_usage_bytes;
    memory.usage_limit = s.memory_limit_bytes;
    memory.file = s.memory_cache_bytes;
    m.memory = Some(memory).into();

    let mut events = v2::MemoryEvents::new();
    events.oom_kill = s.oom_kills;
    m.memory_events = Some(events).into();

    let mut io = v2::IOStat::new();
    let mut e = v2::IOEntry::new();
    e.rbytes = s.io_read_bytes;
    e.wbytes = s.io_write_bytes;
    e.rios = s.io_read_ops;
    e.wios = s.io_write_ops;
    io.usage.push(e);
    m.io = Some(io).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn picks_the_metrics_type_of_the_cgroup_version() {
        let mut s = StatsContainerResponse::new();
        s.memory_usage_bytes = 4096;
        s.pids_current = 3;
        s.cgroup_version = 1;
        let any = to_any(&s).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let back = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage.usage, 4096);
        assert_eq!(back.pids.current, 3);
        s.cgroup_version = 2;
        let any = to_any(&s).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(
            v2::Metrics::parse_from_bytes(&any.value)
                .unwrap()
                .memory
                .usage,
            4096
        );
    }
}
