"""Docker Swarm as gitd's scheduler (issue #16), one module per concern:

    specs      container specs -> swarm service specs (plain data), SwarmUnit
    tasks      task rows for `ps`, service logs for `logs`
    scheduler  SwarmScheduler: the deploy seam (start, wait_ready, remove...)
    services   services with data (Postgres, Redis) as swarm services
    routes     route files on the tasks' addresses; the follower; node drain
    oneoff     `run`: a one-off task and exec in it

The names other modules use are re-exported here.
"""

from hooks.swarm.oneoff import ExecAttached, SwarmOneOff
from hooks.swarm.routes import (FOLLOW_INTERVAL, RETRY_ATTEMPTS, ROUTE_FILE_PREFIX,
                               route_file_name, serving)
from hooks.swarm.scheduler import LABEL_STOPPED, SwarmScheduler, is_swarm_network
from hooks.swarm.services import DATA_SPEC_KEYS, DATA_STOP_GRACE, data_service_spec
from hooks.swarm.specs import (LABEL_BOOT, SERVICE_NAME_MAX, SPEC_KEYS, TASK_ROLE, SwarmUnit,
                               escape_template, group_by_process, has_volume, healthcheck,
                               job_spec, mounts, node_constraint, oneoff_argv, oneoff_job_spec,
                               pinned_to, resources, service_name, service_spec,
                               task_environment, task_template)
from hooks.swarm.tasks import (ENDED_STATES, FAILED_STATES, ServiceLogs, _FollowedLog,
                               current_task, current_tasks, parse_log_line, task_container_name,
                               task_dyno, task_rows)

__all__ = [
    "DATA_SPEC_KEYS", "DATA_STOP_GRACE", "ENDED_STATES", "FAILED_STATES", "FOLLOW_INTERVAL",
    "LABEL_BOOT", "LABEL_STOPPED", "RETRY_ATTEMPTS", "ROUTE_FILE_PREFIX", "SERVICE_NAME_MAX",
    "SPEC_KEYS", "TASK_ROLE", "ExecAttached", "ServiceLogs", "SwarmOneOff", "SwarmScheduler",
    "SwarmUnit", "_FollowedLog", "current_task", "current_tasks", "data_service_spec",
    "escape_template", "group_by_process", "has_volume", "healthcheck", "is_swarm_network",
    "job_spec", "mounts", "node_constraint", "oneoff_argv", "oneoff_job_spec", "parse_log_line",
    "pinned_to", "resources", "route_file_name", "serving", "service_name", "service_spec",
    "task_container_name", "task_dyno", "task_environment", "task_rows", "task_template",
]
