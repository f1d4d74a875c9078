//! Serf's own queries (spec §4.8–§4.10), Go's `internal_query.go` (`serfQueries`) and the
//! asking side of `keymanager.go`: `_serf_ping` (an ack alone), `_serf_conflict` (who holds
//! a name, and the vote we run when someone claims ours) and the `_serf_*-key` queries.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::query::{QueryError, QueryParams, QueryResponseFlags, RespondError};
use super::{Core, Outcome, Serf};
use crate::keys::KeyCommand;
use crate::member::MemberStatus;
use crate::messages::{self, QueryMsg, QueryResponseMsg};

/// Prefix of Serf's own queries, handled here and never shown to the layer above.
pub const INTERNAL_QUERY_PREFIX: &str = "_serf_";

/// Serf's reachability query: answered with an ack alone (`serf reachability`).
pub const PING_QUERY: &str = "_serf_ping";

/// Serf's name-conflict query.
const CONFLICT_QUERY: &str = "_serf_conflict";

/// Votes gathered by our `_serf_conflict` query.
#[derive(Debug, Clone)]
pub(super) struct ConflictVote {
    pub(super) ltime: u64,
    /// The query's ID: an answer must name it, so a forger who did not see the query can't vote.
    pub(super) id: u32,
    me: SocketAddr,
    responses: usize,
    matching: usize,
    voters: BTreeSet<String>,
}

/// A key query waiting for [`Serf`] to apply it to memberlist's keyring.
#[derive(Debug, Clone)]
pub(super) struct KeyQuery {
    ltime: u64,
    id: u32,
    command: KeyCommand,
    payload: Vec<u8>,
}

/// The internal-query side of [`Core`].
#[derive(Debug)]
pub(super) struct InternalQueries {
    /// Whether to run a vote when another node claims our name.
    resolve_conflicts: bool,
    /// Another address claims our name: [`Serf`] asks the cluster who is right.
    pub(super) conflict_seen: bool,
    pub(super) conflict_vote: Option<ConflictVote>,
    /// Key queries waiting for [`Serf`] to apply them to memberlist's keyring.
    pub(super) key_queries: Vec<KeyQuery>,
}

impl InternalQueries {
    pub(super) fn new(resolve_conflicts: bool) -> Self {
        InternalQueries {
            resolve_conflicts,
            conflict_seen: false,
            conflict_vote: None,
            key_queries: Vec::new(),
        }
    }
}

impl Serf {
    /// Starts a key operation from this node (Serf's key manager, spec §4.9): sends the
    /// internal query with the default parameters. Returns its Lamport time, whose
    /// [`Outcome::QueryResponse`]s are the answers to count with a
    /// [`KeyReport`](crate::keys::KeyReport) of the returned size, until all have answered or
    /// [`Outcome::QueryDone`].
    pub fn key_query(
        &mut self,
        command: KeyCommand,
        key: &[u8],
        relay_factor: u8,
        now: Instant,
    ) -> Result<(u64, usize), QueryError> {
        let params = QueryParams {
            relay_factor,
            ..QueryParams::default()
        };
        let num_nodes = self.num_live_members();
        let ltime = self.query(command.query_name(), &command.payload(key), &params, now)?;
        Ok((ltime, num_nodes))
    }

    /// Go's `resolveNodeConflict`: asks the cluster where it believes our name lives (spec
    /// §4.10); the count happens as answers arrive and the verdict when the query ends.
    pub(super) fn resolve_name_conflict(&mut self, now: Instant) {
        let name = self.core.name.clone();
        let me = self.ml.local_node().socket_addr();
        let params = QueryParams::default();
        match self.query(CONFLICT_QUERY, name.as_bytes(), &params, now) {
            Ok(ltime) => {
                let id = self.core.queries.own.get(&ltime).map_or(0, |q| q.id);
                self.core.internal.conflict_vote = Some(ConflictVote {
                    ltime,
                    id,
                    me,
                    responses: 0,
                    matching: 0,
                    voters: BTreeSet::new(),
                })
            }
            Err(e) => error!("serf: Failed to start name resolution query: {e}"),
        }
    }

    /// Applies a `_serf_*-key` query to our keyring and answers it as Go does (spec §4.8; Go's
    /// `handleInstallKey`, `handleUseKey`, `handleRemoveKey`, `handleListKeys`).
    pub(super) fn answer_key_query(&mut self, q: KeyQuery, now: Instant) {
        use base64::Engine as _;
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let KeyQuery {
            ltime,
            id,
            command,
            payload,
        } = q;
        let mut resp = messages::KeyResponse::default();
        info!(
            "serf: Received {} query",
            command.query_name().trim_start_matches("_serf_")
        );
        match (
            self.ml.keyring_mut(),
            messages::decode_key_request(&payload),
        ) {
            (_, Err(e)) => error!("serf: Failed to decode key request: {e}"),
            (None, Ok(_)) => {
                resp.message = match command {
                    KeyCommand::List => "Keyring is empty (encryption not enabled)",
                    _ => "No keyring to modify (encryption not enabled)",
                }
                .into();
            }
            (Some(ring), Ok(key)) => {
                let changed = match command {
                    KeyCommand::Install => ring.add_key(&key),
                    KeyCommand::Use => ring.use_key(&key),
                    KeyCommand::Remove => ring.remove_key(&key),
                    KeyCommand::List => {
                        resp.keys = ring.keys().iter().map(|k| b64(k)).collect();
                        resp.primary_key = b64(ring.primary());
                        Ok(())
                    }
                };
                match changed {
                    Ok(()) => {
                        resp.result = true;
                        if command != KeyCommand::List {
                            debug!(op = command.query_name(), "keyring changed by query");
                            let keys = ring.keys().to_vec();
                            self.core.outcomes.push_back(Outcome::KeyringChanged(keys));
                        }
                    }
                    Err(e) => resp.message = e.to_string(),
                }
            }
        }
        // A long key list is cut until the answer fits (Go's `keyListResponseWithCorrectSize`).
        let limit = self.config.query_response_size_limit;
        let total = resp.keys.len();
        loop {
            let body = messages::encode_key_response(&resp);
            let answer = QueryResponseFlags::Answer;
            match self.core.respond(ltime, id, &body, answer, now, limit) {
                Err(RespondError::TooLarge(_)) if !resp.keys.is_empty() => {
                    resp.keys.pop();
                    resp.message = format!(
                        "truncated key list response, showing first {} of {total} keys",
                        resp.keys.len()
                    );
                }
                Err(e) => {
                    error!("serf: Failed to respond to key query: {e}");
                    break;
                }
                Ok(()) => break,
            }
        }
    }
}

impl Core {
    /// Go's `serfQueries.handleQuery` for a `_serf_` query we process (it passed the filters
    /// and was acked if asked). `_serf_ping` needs only the ack; key queries need the keyring,
    /// which memberlist holds, so [`Serf`] answers them after this input.
    pub(super) fn handle_internal_query(&mut self, q: &QueryMsg, now: Instant) {
        debug!(name = %q.name, "internal query");
        if let Some(command) = KeyCommand::from_query_name(&q.name) {
            self.internal.key_queries.push(KeyQuery {
                ltime: q.ltime,
                id: q.id,
                command,
                payload: q.payload.clone(),
            });
            return;
        }
        if q.name == CONFLICT_QUERY {
            // Go's `handleConflict`: tell the asker where we believe the named node is (never
            // about ourselves: we are the party in dispute).
            let node = String::from_utf8_lossy(&q.payload).into_owned();
            if node != self.name {
                let known = self.members.states.get(&node).map(|m| m.member.clone());
                let body = messages::encode_conflict_response(known.as_ref());
                let (answer, limit) = (QueryResponseFlags::Answer, usize::MAX);
                if let Err(e) = self.respond(q.ltime, q.id, &body, answer, now, limit) {
                    error!("serf: Failed to respond to conflict query: {e}");
                }
            }
        }
        self.queries.forget_inbound(q.ltime, q.id);
    }

    /// memberlist's `NotifyConflict` about our own name: start a vote (after this input).
    pub(super) fn name_conflict_seen(&mut self, other: SocketAddr) {
        error!(
            "serf: Node name conflicts with another node at {other}. Names must be unique! \
             (Resolution enabled: {})",
            self.internal.resolve_conflicts
        );
        if self.internal.resolve_conflicts {
            self.internal.conflict_seen = true;
        }
    }

    /// Counts an answer to our `_serf_conflict` query; false if `r` is not one.
    pub(super) fn conflict_response(&mut self, r: &QueryResponseMsg) -> bool {
        let Some(vote) = (self.internal.conflict_vote.as_mut()).filter(|v| v.ltime == r.ltime)
        else {
            return false;
        };
        // Go checks the ID too; we also count only members we know (not ourselves), once
        // each, so one forger cannot answer under a thousand names.
        let voter = r.from != self.name
            && self.members.states.get(&r.from).is_some_and(|m| {
                matches!(m.member.status, MemberStatus::Alive | MemberStatus::Leaving)
            });
        if r.id != vote.id || !voter {
            if self.stats.drops.record("conflict answer from a non-voter") {
                warn!(from = %r.from.escape_debug(), "ignoring a name conflict answer with a wrong query ID or from a node that is not a live member (logged once)");
            }
            return true;
        }
        if r.flags & messages::QUERY_FLAG_ACK == 0 && vote.voters.insert(r.from.clone()) {
            if let Some(addr) = messages::decode_conflict_response(&r.payload) {
                // At most one each per known member (`voters` dedupes).
                vote.responses = vote.responses.saturating_add(1);
                vote.matching = vote.matching.saturating_add(usize::from(addr == vote.me));
            }
        }
        true
    }

    /// The end of Go's `resolveNodeConflict`: when our conflict query at `ltime` ends, a
    /// majority naming another address means it holds the name and we stop. False if `ltime`
    /// was not the conflict query.
    pub(super) fn finish_conflict_vote(&mut self, ltime: u64) -> bool {
        let Some(vote) = self.internal.conflict_vote.take_if(|v| v.ltime == ltime) else {
            return false;
        };
        let majority = (vote.responses / 2).saturating_add(1);
        if vote.responses == 0 {
            // Go Serf 0.9.4 counts "0 of 0" as a lost vote and exits, so one forged alive
            // could stop a lone agent. Nobody vouched for the other claimant either.
            warn!("no member answered the name conflict query; keeping our name");
        } else if vote.matching >= majority {
            info!(
                "serf: majority in name conflict resolution [{} / {}]",
                vote.matching, vote.responses
            );
        } else {
            warn!(
                "serf: minority in name conflict resolution, quiting [{} / {}]",
                vote.matching, vote.responses
            );
            self.outcomes.push_back(Outcome::Shutdown(format!(
                "node name '{}' is claimed by another node and a majority of the cluster knows that one \
                 ({} of {} answers name our address); pick a unique -node name",
                self.name, vote.matching, vote.responses
            )));
        }
        true
    }
}
