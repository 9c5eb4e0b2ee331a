//! The farm-wide throttle (seed 001 L625–629): the rules that limit what a
//! customer MLM farm sends, and the usage its members share.
//!
//! A farm is an MLM group ([`GroupKind::Mlm`]) of a tenant, found by name in
//! that tenant's namespace. Its rules are static quiet windows (minutes of
//! the day of log time, UTC) and dynamic limits on the bytes and messages
//! of a window of log time. Members report usage increments in batches;
//! the counters belong to the farm, so every member sees the whole farm's
//! usage. [`Throttle::may_send`] answers "may this component send n bytes
//! now?" from the replicated state alone, and names the rule that decided.
//!
//! Invariants:
//! - A farm has exactly one counter per rule, in rule order; only limit
//!   rules use theirs. Setting the rules resets every counter; the totals
//!   ever reported survive.
//! - A counter holds the usage of one window, the one that starts at its
//!   `window_start_ms`; log time never goes backwards, so a report only
//!   ever moves a counter to the same or a later window. A counter of any
//!   other window than the one asked about counts as zero.
//! - Counters saturate rather than wrap.
//! - Another tenant's farms and usage are never seen: a farm of the same
//!   name elsewhere is a different farm.

use rkyv::{Archive, Deserialize, Serialize};

use super::command::{
    ArchivedReportUsage, ArchivedSetThrottle, ArchivedThrottleRule, ArchivedUsage, ComponentKind, GroupKind,
    ThrottleRule, Usage, MINUTES_PER_DAY, PARENTS_MAX, THROTTLE_RULES_MAX, THROTTLE_WINDOW_MS_MAX,
    USAGE_INCREMENTS_MAX,
};
use super::outcome::{Effect, Object, Rejection, Verdict};
use super::table::{Name, Slot, Table};
use super::topology::Topology;
use super::{per_slot, Context};

/// Milliseconds in a minute of log time: quiet windows are whole minutes.
pub const MINUTE_MS: u64 = 60 * 1000;
/// Most components on the walk from a component up to the root, itself
/// included. A kind hangs only below higher kinds, so a chain holds at most
/// one component of each kind, and only a support instance (the lowest
/// kind) has [`PARENTS_MAX`] parents: the support instance, then up to
/// [`PARENTS_MAX`] chains of the other kinds.
pub const LINEAGE_MAX: usize = 1 + PARENTS_MAX * (ComponentKind::ALL.len() - 1);

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Throttle {
    /// Per tenant slot: farm (MLM group) name → farm, in order of first set.
    farms: Vec<Table<Name, Farm>>,
}

/// One customer MLM farm's throttle.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Farm {
    /// In the order a decision checks them; empty when the throttle is
    /// lifted.
    pub rules: Vec<ThrottleRule>,
    /// Position of the set that installed `rules`.
    pub set_at: u64,
    /// One per rule, in the same order; only limit rules count.
    pub counters: Vec<Counter>,
    /// Everything the members reported since the farm was first set.
    pub reported: Usage,
}

/// The farm's usage in the window of log time that starts at
/// `window_start_ms`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub window_start_ms: u64,
    pub bytes: u64,
    pub messages: u64,
}

/// The answer to "may this component send now?".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ThrottleAnswer {
    pub allowed: bool,
    /// The farm that governs the component; None when none does.
    pub farm: Option<String>,
    /// The first rule that denies, with its index among the farm's rules;
    /// None when the send is allowed.
    pub rule: Option<(usize, ThrottleRule)>,
}

impl Throttle {
    // ------------------------------------------------------------ apply

    /// Replaces a farm's rules (the first set creates the farm) and resets
    /// its counters. The group must be an MLM group of the command's tenant.
    pub(super) fn set(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedSetThrottle,
    ) -> Verdict {
        assert!(body.rules.len() <= THROTTLE_RULES_MAX);
        let tenant = context.tenant;
        let Some(group) = topology.group(tenant, body.farm.as_str()) else {
            return not_found(Object::Group);
        };
        if group.kind != GroupKind::Mlm {
            return not_found(Object::Farm);
        }
        let rules: Vec<ThrottleRule> = body.rules.iter().map(rule_from_archived).collect();
        let position = context.assign_position();
        let farms = per_slot(&mut self.farms, tenant);
        let slot = farms.slot(body.farm.as_str()).unwrap_or_else(|| {
            let farm = Farm {
                rules: Vec::new(),
                set_at: position,
                counters: Vec::new(),
                reported: Usage { bytes: 0, messages: 0 },
            };
            farms.insert(Name::from(body.farm.as_str()), farm)
        });
        let farm = farms.get_mut(slot);
        farm.counters = vec![Counter::default(); rules.len()];
        farm.rules = rules;
        farm.set_at = position;
        assert_eq!(farm.rules.len(), farm.counters.len());
        Verdict::Applied(Effect::Recorded { position })
    }

    /// Adds a member's usage increments to its farm's totals and to the
    /// current window of every limit rule.
    pub(super) fn report(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedReportUsage,
    ) -> Verdict {
        assert!((1..=USAGE_INCREMENTS_MAX).contains(&body.increments.len()));
        let tenant = context.tenant;
        let farm = self
            .farms
            .get(tenant as usize)
            .and_then(|farms| farms.slot(body.farm.as_str()));
        let Some(farm) = farm else {
            return not_found(Object::Farm);
        };
        // A farm is created only for an existing group, and groups are
        // never removed.
        let group = topology
            .group(tenant, body.farm.as_str())
            .expect("a farm's group exists");
        let Some(member) = topology.resolve(tenant, body.member.hosted, body.member.id.as_str()) else {
            return not_found(Object::Member);
        };
        if !group.members.contains(&member) {
            return Verdict::Rejected(Rejection::NotMember);
        }
        let usage = body
            .increments
            .iter()
            .fold(Usage { bytes: 0, messages: 0 }, add_increment);
        let position = context.assign_position();
        self.farms[tenant as usize].get_mut(farm).record(usage, context.now_ms);
        Verdict::Applied(Effect::Recorded { position })
    }

    pub(super) fn rebuild(&mut self) {
        self.farms.iter_mut().for_each(Table::rebuild);
    }

    // ------------------------------------------------------------ queries

    /// Whether `component` may send `bytes` bytes (one message) at log time
    /// `now_ms`, by the rules of its farm in `tenant`: the first farm, in
    /// order of first set, whose group holds the component or anything it
    /// hangs below. No farm: allowed. Reads no clock.
    pub fn may_send(
        &self,
        topology: &Topology,
        tenant: Slot,
        component: Slot,
        bytes: u64,
        now_ms: u64,
    ) -> ThrottleAnswer {
        let Some((name, farm)) = self.governing(topology, tenant, component) else {
            return ThrottleAnswer {
                allowed: true,
                farm: None,
                rule: None,
            };
        };
        let rule = farm.denying(bytes, now_ms);
        ThrottleAnswer {
            allowed: rule.is_none(),
            farm: Some(name.to_string()),
            rule,
        }
    }

    /// A farm of `tenant`, by its group's name.
    pub fn farm(&self, tenant: Slot, name: &str) -> Option<&Farm> {
        let farms = self.farms.get(tenant as usize)?;
        Some(farms.get(farms.slot(name)?))
    }

    /// Farms of every tenant.
    pub fn farm_count(&self) -> usize {
        self.farms.iter().map(Table::len).sum()
    }

    /// The first farm of `tenant` whose group holds `component` or one of
    /// its ancestors.
    fn governing(&self, topology: &Topology, tenant: Slot, component: Slot) -> Option<(&Name, &Farm)> {
        let farms = self.farms.get(tenant as usize)?;
        let lineage = lineage(topology, component);
        let governs = |name: &Name| {
            topology
                .group(tenant, name)
                .is_some_and(|group| lineage.iter().any(|slot| group.members.contains(slot)))
        };
        farms
            .iter()
            .find(|(_, name, _)| governs(name))
            .map(|(_, name, farm)| (name, farm))
    }
}

impl Farm {
    fn record(&mut self, usage: Usage, now_ms: u64) {
        assert_eq!(self.rules.len(), self.counters.len());
        self.reported = add(self.reported, usage.bytes, usage.messages);
        for (rule, counter) in self.rules.iter().zip(&mut self.counters) {
            if let ThrottleRule::Limit { window_ms, .. } = *rule {
                counter.add(window_start_ms(now_ms, window_ms), usage);
            }
        }
    }

    /// Per rule, in rule order: for a limit rule, the farm's usage in the
    /// window of log time that holds `now_ms` (zero when nothing was
    /// reported in it yet); None for a quiet rule.
    pub fn usage_at(&self, now_ms: u64) -> Vec<Option<Counter>> {
        assert_eq!(self.rules.len(), self.counters.len());
        let usage = |(rule, counter): (&ThrottleRule, &Counter)| match *rule {
            ThrottleRule::Quiet { .. } => None,
            ThrottleRule::Limit { window_ms, .. } => {
                let window_start_ms = window_start_ms(now_ms, window_ms);
                let (bytes, messages) = counter.in_window(window_start_ms);
                Some(Counter {
                    window_start_ms,
                    bytes,
                    messages,
                })
            }
        };
        self.rules.iter().zip(&self.counters).map(usage).collect()
    }

    /// The first rule that denies a send of `bytes` at `now_ms`.
    fn denying(&self, bytes: u64, now_ms: u64) -> Option<(usize, ThrottleRule)> {
        assert_eq!(self.rules.len(), self.counters.len());
        self.rules
            .iter()
            .zip(&self.counters)
            .position(|(rule, counter)| denies(rule, counter, bytes, now_ms))
            .map(|at| (at, self.rules[at]))
    }
}

impl Counter {
    fn add(&mut self, window_start_ms: u64, usage: Usage) {
        // Log time never goes backwards.
        assert!(self.window_start_ms <= window_start_ms);
        if self.window_start_ms != window_start_ms {
            *self = Counter {
                window_start_ms,
                bytes: 0,
                messages: 0,
            };
        }
        self.bytes = self.bytes.saturating_add(usage.bytes);
        self.messages = self.messages.saturating_add(usage.messages);
    }

    /// The bytes and messages counted in the window that starts at
    /// `window_start_ms`.
    fn in_window(&self, window_start_ms: u64) -> (u64, u64) {
        match self.window_start_ms == window_start_ms {
            true => (self.bytes, self.messages),
            false => (0, 0),
        }
    }
}

/// Whether `rule` denies a send of `bytes` bytes, one message, at `now_ms`.
fn denies(rule: &ThrottleRule, counter: &Counter, bytes: u64, now_ms: u64) -> bool {
    match *rule {
        ThrottleRule::Quiet { from_minute, to_minute } => is_quiet(minute_of_day(now_ms), from_minute, to_minute),
        ThrottleRule::Limit {
            window_ms,
            max_bytes,
            max_messages,
        } => {
            let (used_bytes, used_messages) = counter.in_window(window_start_ms(now_ms, window_ms));
            let over =
                |used: u64, sending: u64, max: Option<u64>| max.is_some_and(|max| used.saturating_add(sending) > max);
            over(used_bytes, bytes, max_bytes) || over(used_messages, 1, max_messages)
        }
    }
}

/// Whether `minute` is in `[from, to)`, wrapping past midnight when
/// `from > to`.
fn is_quiet(minute: u16, from: u16, to: u16) -> bool {
    assert!(minute < MINUTES_PER_DAY);
    match from <= to {
        true => from <= minute && minute < to,
        false => from <= minute || minute < to,
    }
}

fn minute_of_day(now_ms: u64) -> u16 {
    let minute = (now_ms / MINUTE_MS) % u64::from(MINUTES_PER_DAY);
    u16::try_from(minute).expect("a minute of the day fits in u16")
}

/// The start of the window of length `window_ms` that holds `now_ms`.
fn window_start_ms(now_ms: u64, window_ms: u64) -> u64 {
    assert!((1..=THROTTLE_WINDOW_MS_MAX).contains(&window_ms));
    now_ms - now_ms % window_ms
}

/// The component and everything it hangs below, each once, nearest first.
fn lineage(topology: &Topology, component: Slot) -> Vec<Slot> {
    let mut found = vec![component];
    let mut at = 0;
    while let Some(&slot) = found.get(at) {
        for &parent in &topology.component(slot).parents {
            if !found.contains(&parent) {
                found.push(parent);
            }
        }
        assert!(found.len() <= LINEAGE_MAX);
        at += 1;
    }
    found
}

fn add_increment(total: Usage, increment: &ArchivedUsage) -> Usage {
    add(total, increment.bytes.to_native(), increment.messages.to_native())
}

fn add(total: Usage, bytes: u64, messages: u64) -> Usage {
    Usage {
        bytes: total.bytes.saturating_add(bytes),
        messages: total.messages.saturating_add(messages),
    }
}

fn rule_from_archived(rule: &ArchivedThrottleRule) -> ThrottleRule {
    match rule {
        ArchivedThrottleRule::Quiet { from_minute, to_minute } => ThrottleRule::Quiet {
            from_minute: from_minute.to_native(),
            to_minute: to_minute.to_native(),
        },
        ArchivedThrottleRule::Limit {
            window_ms,
            max_bytes,
            max_messages,
        } => ThrottleRule::Limit {
            window_ms: window_ms.to_native(),
            max_bytes: max_bytes.as_ref().map(|max| max.to_native()),
            max_messages: max_messages.as_ref().map(|max| max.to_native()),
        },
    }
}

fn not_found(object: Object) -> Verdict {
    Verdict::Rejected(Rejection::NotFound { object })
}

#[cfg(test)]
mod tests {
    use super::super::command::{
        Command, CommandBody, ComponentKind::*, ComponentRef, GroupKind, ReportUsage, SetThrottle, ThrottleRule, Usage,
        LANDLORD,
    };
    use super::super::outcome::{Effect, Object, Rejection};
    use super::super::testing::{self, *};
    use super::super::State;
    use super::{Counter, Farm, ThrottleAnswer, MINUTE_MS};

    /// Positions the setup gives out: 7 for [`testing::farm`], 5 components,
    /// 2 groups and 3 memberships.
    const SETUP_POSITIONS: u64 = 17;
    const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

    /// [`testing::farm`] plus, in acme at log time 3: two customer MLMs
    /// `cmlm` and `cmlm2` below the hosted `agg`, in the MLM group `farm1`;
    /// a proxy `proxy2` below `cmlm` with an integration module `im2`; a
    /// support instance `si2` below both `im` (outside the farm) and `im2`;
    /// and a proxy group `proxies` holding `proxy`.
    fn setup() -> Vec<(Command, Expect)> {
        let mut commands = testing::farm();
        commands.extend([
            command("acme", 3, component("cmlm", CustomerMlm, vec![hosted("agg")])),
            command("acme", 3, component("cmlm2", CustomerMlm, vec![hosted("agg")])),
            command("acme", 3, component("proxy2", Proxy, vec![own("cmlm")])),
            command("acme", 3, component("im2", IntegrationModule, vec![own("proxy2")])),
            command(
                "acme",
                3,
                component("si2", SupportInstance, vec![own("im"), own("im2")]),
            ),
            command("acme", 3, define_group("farm1", GroupKind::Mlm)),
            command("acme", 3, group_member("farm1", own("cmlm"), true)),
            command("acme", 3, group_member("farm1", own("cmlm2"), true)),
            command("acme", 3, define_group("proxies", GroupKind::Proxy)),
            command("acme", 3, group_member("proxies", own("proxy"), true)),
        ]);
        commands.into_iter().map(|command| (command, Expect::Applied)).collect()
    }

    fn run(more: Vec<(Command, Expect)>) -> State {
        let mut steps = setup();
        steps.extend(more);
        check(&steps)
    }

    fn set_throttle(farm: &str, rules: Vec<ThrottleRule>) -> CommandBody {
        CommandBody::SetThrottle(SetThrottle {
            farm: farm.to_string(),
            rules,
        })
    }

    /// A report of `(bytes, messages)` increments.
    fn report(farm: &str, member: ComponentRef, increments: &[(u64, u64)]) -> CommandBody {
        CommandBody::ReportUsage(ReportUsage {
            farm: farm.to_string(),
            member,
            increments: increments
                .iter()
                .map(|&(bytes, messages)| Usage { bytes, messages })
                .collect(),
        })
    }

    fn limit(window_ms: u64, max_bytes: Option<u64>, max_messages: Option<u64>) -> ThrottleRule {
        ThrottleRule::Limit {
            window_ms,
            max_bytes,
            max_messages,
        }
    }

    fn quiet(from_minute: u16, to_minute: u16) -> ThrottleRule {
        ThrottleRule::Quiet { from_minute, to_minute }
    }

    fn recorded(position: u64) -> Expect {
        Expect::Effect(Effect::Recorded { position })
    }

    fn rejected(rejection: Rejection) -> Expect {
        Expect::Rejected(rejection)
    }

    fn not_found(object: Object) -> Expect {
        Expect::Rejected(Rejection::NotFound { object })
    }

    /// Asks whether `component` (of `tenant`'s namespace) may send.
    fn ask(state: &State, tenant: &str, component: &str, bytes: u64, now_ms: u64) -> ThrottleAnswer {
        ask_as(state, tenant, tenant, component, bytes, now_ms)
    }

    /// Asks in `tenant` about a component of `owner`'s namespace.
    fn ask_as(state: &State, tenant: &str, owner: &str, component: &str, bytes: u64, now_ms: u64) -> ThrottleAnswer {
        let topology = state.topology();
        let slot = topology
            .registered(state.tenant_slot(owner).unwrap(), component)
            .unwrap();
        let tenant = state.tenant_slot(tenant).unwrap();
        state.throttle().may_send(topology, tenant, slot, bytes, now_ms)
    }

    fn allowed(farm: Option<&str>) -> ThrottleAnswer {
        ThrottleAnswer {
            allowed: true,
            farm: farm.map(str::to_string),
            rule: None,
        }
    }

    fn denied(farm: &str, at: usize, rule: ThrottleRule) -> ThrottleAnswer {
        ThrottleAnswer {
            allowed: false,
            farm: Some(farm.to_string()),
            rule: Some((at, rule)),
        }
    }

    fn farm<'a>(state: &'a State, tenant: &str, name: &str) -> Option<&'a Farm> {
        state.throttle().farm(state.tenant_slot(tenant).unwrap(), name)
    }

    fn counter(window_start_ms: u64, bytes: u64, messages: u64) -> Counter {
        Counter {
            window_start_ms,
            bytes,
            messages,
        }
    }

    fn at_minute(minute: u64) -> u64 {
        minute * MINUTE_MS
    }

    #[test]
    fn setup_gives_out_the_positions_the_tests_count_on() {
        let state = run(vec![]);
        assert_eq!(state.last_position(), SETUP_POSITIONS);
        assert_eq!(state.throttle().farm_count(), 0);
    }

    #[test]
    fn set_needs_an_mlm_group_of_the_tenant() {
        let rules = vec![quiet(600, 720), limit(60_000, Some(1000), None)];
        let state = run(vec![
            (
                command("acme", 4, set_throttle("nope", rules.clone())),
                not_found(Object::Group),
            ),
            (
                command("acme", 4, set_throttle("proxies", rules.clone())),
                not_found(Object::Farm),
            ),
            // The landlord has no group `farm1`: acme's is not in its namespace.
            (
                command(LANDLORD, 4, set_throttle("farm1", rules.clone())),
                not_found(Object::Group),
            ),
            (
                command("acme", 4, set_throttle("farm1", rules.clone())),
                recorded(SETUP_POSITIONS + 1),
            ),
        ]);
        let expected = Farm {
            rules,
            set_at: SETUP_POSITIONS + 1,
            counters: vec![Counter::default(); 2],
            reported: Usage { bytes: 0, messages: 0 },
        };
        assert_eq!(farm(&state, "acme", "farm1"), Some(&expected));
        assert_eq!(farm(&state, "acme", "proxies"), None);
        assert_eq!(farm(&state, LANDLORD, "farm1"), None);
        assert_eq!(state.throttle().farm_count(), 1);
        assert_eq!(state.last_position(), SETUP_POSITIONS + 1);
    }

    #[test]
    fn set_replaces_the_rules_and_resets_the_counters_and_no_rules_lift_the_throttle() {
        let first = limit(60_000, Some(1000), Some(10));
        let second = limit(1000, None, Some(1));
        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", vec![first])), Expect::Applied),
            (
                command("acme", 5, report("farm1", own("cmlm"), &[(600, 2)])),
                Expect::Applied,
            ),
            (
                command("acme", 6, set_throttle("farm1", vec![second])),
                recorded(SETUP_POSITIONS + 3),
            ),
        ]);
        let expected = Farm {
            rules: vec![second],
            set_at: SETUP_POSITIONS + 3,
            counters: vec![Counter::default()],
            reported: Usage {
                bytes: 600,
                messages: 2,
            },
        };
        assert_eq!(farm(&state, "acme", "farm1"), Some(&expected));
        assert_eq!(ask(&state, "acme", "cmlm", 5000, 6), allowed(Some("farm1")));

        let state = run(vec![
            (
                command("acme", 4, set_throttle("farm1", vec![quiet(0, 1)])),
                Expect::Applied,
            ),
            (
                command("acme", 5, set_throttle("farm1", vec![])),
                recorded(SETUP_POSITIONS + 2),
            ),
        ]);
        let lifted = farm(&state, "acme", "farm1").unwrap();
        assert_eq!(
            (lifted.rules.len(), lifted.counters.len(), lifted.set_at),
            (0, 0, SETUP_POSITIONS + 2)
        );
        assert_eq!(state.throttle().farm_count(), 1);
        // Still the farm, but nothing denies: minute 0 was quiet before.
        assert_eq!(ask(&state, "acme", "cmlm", 1, 5), allowed(Some("farm1")));
    }

    #[test]
    fn report_needs_a_set_farm_and_a_member() {
        let state = run(vec![
            (
                command("acme", 4, report("farm1", own("cmlm"), &[(1, 1)])),
                not_found(Object::Farm),
            ),
            (
                command("acme", 4, set_throttle("farm1", vec![limit(60_000, Some(10), None)])),
                Expect::Applied,
            ),
            (
                command("acme", 4, report("proxies", own("proxy"), &[(1, 1)])),
                not_found(Object::Farm),
            ),
            (
                command("acme", 4, report("farm1", own("ghost"), &[(1, 1)])),
                not_found(Object::Member),
            ),
            // No hosted `cmlm`: acme's is not in the landlord's namespace.
            (
                command("acme", 4, report("farm1", hosted("cmlm"), &[(1, 1)])),
                not_found(Object::Member),
            ),
            (
                command("acme", 4, report("farm1", own("proxy2"), &[(1, 1)])),
                rejected(Rejection::NotMember),
            ),
            (
                command("acme", 4, report("farm1", hosted("agg"), &[(1, 1)])),
                rejected(Rejection::NotMember),
            ),
            (command(LANDLORD, 4, customer("globex")), Expect::Applied),
            (
                command("globex", 4, report("farm1", own("cmlm"), &[(1, 1)])),
                not_found(Object::Farm),
            ),
            (
                command("acme", 4, report("farm1", own("cmlm"), &[(7, 1), (2, 3)])),
                recorded(SETUP_POSITIONS + 3),
            ),
        ]);
        let farm1 = farm(&state, "acme", "farm1").unwrap();
        assert_eq!(farm1.reported, Usage { bytes: 9, messages: 4 });
        assert_eq!(farm1.counters, vec![counter(0, 9, 4)]);
    }

    #[test]
    fn members_share_the_counters() {
        let rule = limit(60_000, Some(1000), Some(5));
        let steps = vec![
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 1000, report("farm1", own("cmlm"), &[(400, 1)])),
                Expect::Applied,
            ),
            (
                command("acme", 1000, report("farm1", own("cmlm2"), &[(200, 1), (300, 2)])),
                Expect::Applied,
            ),
        ];
        let state = run(steps.clone());
        assert_eq!(
            farm(&state, "acme", "farm1").unwrap().counters,
            vec![counter(0, 900, 4)]
        );
        // 900 + 100 bytes is the limit, not over it; one more byte is.
        assert_eq!(ask(&state, "acme", "cmlm", 100, 1000), allowed(Some("farm1")));
        assert_eq!(ask(&state, "acme", "cmlm", 101, 1000), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "acme", "cmlm2", 101, 1000), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "acme", "cmlm2", 0, 1000), allowed(Some("farm1")));

        // A fifth message fills the message limit for every member.
        let mut steps = steps;
        steps.push((
            command("acme", 2000, report("farm1", own("cmlm"), &[(0, 1)])),
            Expect::Applied,
        ));
        let state = run(steps);
        assert_eq!(
            farm(&state, "acme", "farm1").unwrap().counters,
            vec![counter(0, 900, 5)]
        );
        assert_eq!(ask(&state, "acme", "cmlm", 0, 2000), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "acme", "cmlm2", 0, 2000), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "acme", "proxy2", 0, 2000), denied("farm1", 0, rule));
    }

    #[test]
    fn usage_is_shown_per_rule_in_the_window_asked_about() {
        let rules = vec![limit(60_000, Some(1000), None), quiet(10, 20)];
        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", rules)), Expect::Applied),
            (
                command("acme", 61_000, report("farm1", own("cmlm"), &[(400, 1), (100, 1)])),
                Expect::Applied,
            ),
        ]);
        let farm = farm(&state, "acme", "farm1").unwrap();
        assert_eq!(farm.usage_at(119_999), vec![Some(counter(60_000, 500, 2)), None]);
        // Another window has nothing reported yet.
        assert_eq!(farm.usage_at(120_000), vec![Some(counter(120_000, 0, 0)), None]);
    }

    #[test]
    fn a_new_window_counts_from_zero() {
        let rule = limit(1000, Some(1000), None);
        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 10_200, report("farm1", own("cmlm"), &[(900, 1)])),
                Expect::Applied,
            ),
        ]);
        assert_eq!(
            farm(&state, "acme", "farm1").unwrap().counters,
            vec![counter(10_000, 900, 1)]
        );
        assert_eq!(ask(&state, "acme", "cmlm", 200, 10_999), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "acme", "cmlm", 200, 11_000), allowed(Some("farm1")));

        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 10_200, report("farm1", own("cmlm"), &[(900, 1)])),
                Expect::Applied,
            ),
            (
                command("acme", 11_100, report("farm1", own("cmlm2"), &[(50, 1)])),
                Expect::Applied,
            ),
        ]);
        let farm1 = farm(&state, "acme", "farm1").unwrap();
        assert_eq!(farm1.counters, vec![counter(11_000, 50, 1)]);
        assert_eq!(
            farm1.reported,
            Usage {
                bytes: 950,
                messages: 2
            }
        );
        assert_eq!(ask(&state, "acme", "cmlm", 950, 11_100), allowed(Some("farm1")));
        assert_eq!(ask(&state, "acme", "cmlm", 951, 11_100), denied("farm1", 0, rule));
    }

    #[test]
    fn quiet_windows_are_minutes_of_the_day_and_wrap_past_midnight() {
        let morning = quiet(600, 720);
        let night = quiet(1380, 60);
        let state = run(vec![(
            command("acme", 4, set_throttle("farm1", vec![morning, night])),
            Expect::Applied,
        )]);
        let cases = [
            (at_minute(600) - 1, None),
            (at_minute(600), Some((0, morning))),
            (at_minute(719) + MINUTE_MS - 1, Some((0, morning))),
            (at_minute(720), None),
            (at_minute(1379), None),
            (at_minute(1380), Some((1, night))),
            (at_minute(1439), Some((1, night))),
            (DAY_MS, Some((1, night))),
            (DAY_MS + at_minute(59), Some((1, night))),
            (DAY_MS + at_minute(60), None),
            (3 * DAY_MS + at_minute(650), Some((0, morning))),
        ];
        for (now_ms, rule) in cases {
            let expected = match rule {
                None => allowed(Some("farm1")),
                Some((at, rule)) => denied("farm1", at, rule),
            };
            assert_eq!(ask(&state, "acme", "cmlm", 1, now_ms), expected, "at {now_ms} ms");
        }
    }

    #[test]
    fn the_first_denying_rule_decides() {
        let morning = quiet(600, 720);
        let bytes = limit(DAY_MS, Some(100), None);
        let state = run(vec![(
            command("acme", 4, set_throttle("farm1", vec![morning, bytes])),
            Expect::Applied,
        )]);
        assert_eq!(
            ask(&state, "acme", "cmlm", 10, at_minute(650)),
            denied("farm1", 0, morning)
        );
        assert_eq!(
            ask(&state, "acme", "cmlm", 1000, at_minute(650)),
            denied("farm1", 0, morning)
        );
        assert_eq!(
            ask(&state, "acme", "cmlm", 1000, at_minute(100)),
            denied("farm1", 1, bytes)
        );
        assert_eq!(ask(&state, "acme", "cmlm", 10, at_minute(100)), allowed(Some("farm1")));

        let state = run(vec![(
            command("acme", 4, set_throttle("farm1", vec![bytes, morning])),
            Expect::Applied,
        )]);
        assert_eq!(
            ask(&state, "acme", "cmlm", 1000, at_minute(650)),
            denied("farm1", 0, bytes)
        );
        assert_eq!(
            ask(&state, "acme", "cmlm", 10, at_minute(650)),
            denied("farm1", 1, morning)
        );
    }

    #[test]
    fn a_component_outside_every_farm_is_allowed() {
        let always = quiet(0, 1439);
        let state = run(vec![(
            command("acme", 4, set_throttle("farm1", vec![always])),
            Expect::Applied,
        )]);
        for id in ["proxy", "im", "si"] {
            assert_eq!(ask(&state, "acme", id, 1, 5), allowed(None), "{id}");
        }
        // The hosted chain above the farm is not governed by it either.
        assert_eq!(ask_as(&state, "acme", LANDLORD, "agg", 1, 5), allowed(None));
        assert_eq!(ask(&state, "acme", "cmlm", 1, 5), denied("farm1", 0, always));
        // Before any set, nothing is governed.
        let state = run(vec![]);
        assert_eq!(ask(&state, "acme", "cmlm", u64::MAX, 5), allowed(None));
    }

    #[test]
    fn everything_below_a_member_is_governed_by_its_farm() {
        let always = quiet(0, 1439);
        let state = run(vec![(
            command("acme", 4, set_throttle("farm1", vec![always])),
            Expect::Applied,
        )]);
        // si2 hangs below `im` (outside the farm) and `im2` (inside).
        for id in ["cmlm", "proxy2", "im2", "si2"] {
            assert_eq!(ask(&state, "acme", id, 1, 5), denied("farm1", 0, always), "{id}");
        }
    }

    #[test]
    fn a_component_in_two_farms_follows_the_first_set() {
        let always = quiet(0, 1439);
        let state = run(vec![
            (
                command("acme", 4, define_group("farm0", GroupKind::Mlm)),
                Expect::Applied,
            ),
            (
                command("acme", 4, group_member("farm0", own("cmlm"), true)),
                Expect::Applied,
            ),
            (command("acme", 4, set_throttle("farm1", vec![always])), Expect::Applied),
            (command("acme", 4, set_throttle("farm0", vec![])), Expect::Applied),
        ]);
        assert_eq!(ask(&state, "acme", "proxy2", 1, 5), denied("farm1", 0, always));

        let state = run(vec![
            (
                command("acme", 4, define_group("farm0", GroupKind::Mlm)),
                Expect::Applied,
            ),
            (
                command("acme", 4, group_member("farm0", own("cmlm"), true)),
                Expect::Applied,
            ),
            (command("acme", 4, set_throttle("farm0", vec![])), Expect::Applied),
            (command("acme", 4, set_throttle("farm1", vec![always])), Expect::Applied),
        ]);
        assert_eq!(ask(&state, "acme", "proxy2", 1, 5), allowed(Some("farm0")));
        assert_eq!(ask(&state, "acme", "cmlm2", 1, 5), denied("farm1", 0, always));
    }

    #[test]
    fn another_tenants_farm_and_usage_are_not_visible() {
        let rule = limit(60_000, Some(1000), None);
        let state = run(vec![
            (command(LANDLORD, 4, customer("globex")), Expect::Applied),
            (
                command("globex", 4, component("cmlm", CustomerMlm, vec![hosted("agg")])),
                Expect::Applied,
            ),
            (
                command("globex", 4, define_group("farm1", GroupKind::Mlm)),
                Expect::Applied,
            ),
            (
                command("globex", 4, group_member("farm1", own("cmlm"), true)),
                Expect::Applied,
            ),
            (command("globex", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 5, report("farm1", own("cmlm"), &[(1000, 1)])),
                Expect::Applied,
            ),
            // globex's `cmlm` is its own: this counts in globex's farm only.
            (
                command("globex", 5, report("farm1", own("cmlm"), &[(10, 1)])),
                Expect::Applied,
            ),
        ]);
        assert_eq!(state.throttle().farm_count(), 2);
        assert_eq!(
            farm(&state, "acme", "farm1").unwrap().counters,
            vec![counter(0, 1000, 1)]
        );
        assert_eq!(
            farm(&state, "globex", "farm1").unwrap().counters,
            vec![counter(0, 10, 1)]
        );
        assert_eq!(ask(&state, "acme", "cmlm", 1, 5), denied("farm1", 0, rule));
        assert_eq!(ask(&state, "globex", "cmlm", 990, 5), allowed(Some("farm1")));
        assert_eq!(ask(&state, "globex", "cmlm", 991, 5), denied("farm1", 0, rule));
        // Asked in globex, acme's component has no farm.
        assert_eq!(ask_as(&state, "globex", "acme", "cmlm", 1, 5), allowed(None));
    }

    #[test]
    fn counters_saturate() {
        let rule = limit(60_000, Some(u64::MAX - 1), None);
        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 5, report("farm1", own("cmlm"), &[(u64::MAX, 1), (5, u64::MAX)])),
                Expect::Applied,
            ),
            (
                command("acme", 5, report("farm1", own("cmlm2"), &[(1, 1)])),
                Expect::Applied,
            ),
        ]);
        let farm1 = farm(&state, "acme", "farm1").unwrap();
        assert_eq!(
            farm1.reported,
            Usage {
                bytes: u64::MAX,
                messages: u64::MAX
            }
        );
        assert_eq!(farm1.counters, vec![counter(0, u64::MAX, u64::MAX)]);
        assert_eq!(ask(&state, "acme", "cmlm", 0, 5), denied("farm1", 0, rule));
    }

    #[test]
    fn farms_survive_a_snapshot() {
        let rule = limit(60_000, Some(1000), None);
        let state = run(vec![
            (command("acme", 4, set_throttle("farm1", vec![rule])), Expect::Applied),
            (
                command("acme", 5, report("farm1", own("cmlm"), &[(1000, 1)])),
                Expect::Applied,
            ),
        ]);
        let restored = State::restore(&state.snapshot()).unwrap();
        assert_eq!(restored.hash(), state.hash());
        assert_eq!(farm(&restored, "acme", "farm1"), farm(&state, "acme", "farm1"));
        assert_eq!(ask(&restored, "acme", "proxy2", 1, 5), denied("farm1", 0, rule));
    }
}
