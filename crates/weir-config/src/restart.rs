//! Settings a node reads once, at start: a reload keeps their running values and names them.

use crate::Config;

/// Copies into `new` the running value of every setting that only a restart can change
/// (listeners, workers, the store, `data_dir`, the event backend, analytics), and returns
/// the names of those the edit changed, for one warning. Everything else in `new` applies.
pub fn hold_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut held = Vec::new();
    let mut hold = |name: &'static str, changed: bool| {
        if changed {
            held.push(name);
        }
    };
    hold("listen.proxy", running.listen.proxy != new.listen.proxy);
    new.listen.proxy.clone_from(&running.listen.proxy);
    hold("listen.admin", running.listen.admin != new.listen.admin);
    new.listen.admin.clone_from(&running.listen.admin);
    match (&running.listen.tls, &mut new.listen.tls) {
        (Some(a), Some(b)) if a.address == b.address => {}
        (None, None) => {}
        // Added, removed or moved: the certificates of the running listener stay too, as
        // the new ones were written for another listener.
        (old, new_tls) => {
            hold("listen.tls", true);
            new_tls.clone_from(old);
        }
    }
    hold("workers", running.workers != new.workers);
    new.workers = running.workers;
    hold("store", running.store != new.store);
    new.store.clone_from(&running.store);
    hold("data_dir", running.data_dir != new.data_dir);
    new.data_dir.clone_from(&running.data_dir);
    hold(
        "events.backend",
        running.events.backend != new.events.backend,
    );
    new.events.backend.clone_from(&running.events.backend);
    hold(
        "events.namespace",
        running.events.namespace != new.events.namespace,
    );
    new.events.namespace.clone_from(&running.events.namespace);
    hold("analytics", running.analytics != new.analytics);
    new.analytics.clone_from(&running.analytics);
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = crate::from_yaml(
            "listen: { proxy: 127.0.0.1:1, admin: 127.0.0.1:2 }\nworkers: 2\nevents: { backend: embedded }\n",
            "t",
        )
        .unwrap();
        let mut new = crate::from_yaml(
            "listen: { proxy: 127.0.0.1:3, admin: 127.0.0.1:2 }\nworkers: 2\nevents: { backend: \"redis://127.0.0.1:6379\" }\nlimits: { max_body_size: 1KiB }\n",
            "t",
        )
        .unwrap();
        let held = hold_restart_only(&running, &mut new);
        assert_eq!(held, ["listen.proxy", "events.backend"]);
        assert_eq!(new.listen.proxy, "127.0.0.1:1");
        assert_eq!(new.events.backend, "embedded");
        assert_eq!(new.limits.max_body_size.0, 1024, "the rest applies");
        assert!(hold_restart_only(&running, &mut running.clone()).is_empty());
    }
}
