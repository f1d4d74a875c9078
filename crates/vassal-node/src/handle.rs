//! The [`Handle`]: the only way into a running node. Each call sends a command to the driver task
//! and, where there is an answer, awaits it on a oneshot channel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use vassal_serf::coordinate::Coordinate;
use vassal_serf::keys::{KeyCommand, KeyReport};
use vassal_serf::tags::TagsError;
use vassal_serf::{
    Event, ForceLeaveError, Member, QueryError, QueryParams, RespondError, UserEventError,
};

/// Commands from handles to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Members(oneshot::Sender<Vec<Member>>),
    Join {
        addrs: Vec<SocketAddr>,
        replay: bool,
        done: oneshot::Sender<Result<usize, JoinError>>,
    },
    UserEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        done: oneshot::Sender<Result<(), UserEventError>>,
    },
    Leave(oneshot::Sender<()>),
    SetTags {
        tags: BTreeMap<String, String>,
        done: oneshot::Sender<Result<(), NodeError>>,
    },
    Query {
        name: String,
        payload: Vec<u8>,
        params: QueryParams,
        done: oneshot::Sender<Result<QueryResponse, QueryError>>,
    },
    Respond {
        ltime: u64,
        id: u32,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<(), RespondError>>,
    },
    ForceLeave {
        node: String,
        prune: bool,
        done: oneshot::Sender<Result<(), ForceLeaveError>>,
    },
    Key {
        command: KeyCommand,
        key: String,
        done: oneshot::Sender<KeyOutcome>,
    },
    Stats(oneshot::Sender<NodeStats>),
    Coordinate {
        node: String,
        done: oneshot::Sender<Option<Coordinate>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// What a key operation found: the tally, and Serf's error if any node failed or stayed
/// silent (or the key was not base64, in which case nothing was sent and the tally is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOutcome {
    pub report: KeyReport,
    pub error: Option<String>,
}

/// A snapshot of the node's counters, for Serf's `stats` (`serf info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// Every member known, failed and left ones included.
    pub members: usize,
    pub failed: usize,
    pub left: usize,
    pub health_score: i32,
    pub member_time: u64,
    pub event_time: u64,
    pub query_time: u64,
    pub intent_queue: usize,
    pub event_queue: usize,
    pub query_queue: usize,
    pub encrypted: bool,
    /// `None` when coordinates are disabled.
    pub coordinate_resets: Option<u64>,
    /// Packets and streams that did not decode, and well-formed messages refused as hostile
    /// or impossible (memberlist's and Serf's drops, by reason).
    pub malformed_packets: u64,
    pub malformed_streams: u64,
    pub drops: BTreeMap<String, u64>,
}

/// Why a [`Handle`] call failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The driver has stopped (after [`Handle::shutdown`], or because it failed); nothing was done.
    #[error("the node has shut down")]
    Stopped,
    /// No join exchange succeeded.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The tags were not changed.
    #[error(transparent)]
    Tags(#[from] TagsError),
    /// The tags file could not be rewritten; the tags were not changed.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The user event was not sent.
    #[error(transparent)]
    UserEvent(#[from] UserEventError),
    /// The query was not sent.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The answer was not sent.
    #[error(transparent)]
    Respond(#[from] RespondError),
    /// The member was marked left, but the broadcast may not have gone out.
    #[error(transparent)]
    ForceLeave(#[from] ForceLeaveError),
}

/// A join in which no exchange succeeded; one line per address, like Serf's multi-error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError {
    pub errors: Vec<String>,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.len() {
            0 => return f.write_str("no addresses to join"),
            1 => f.write_str("1 error occurred:")?,
            n => write!(f, "{n} errors occurred:")?,
        }
        for e in &self.errors {
            write!(f, "\n\t* {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JoinError {}

/// One query this node sent, as Go Serf's `QueryResponse`: acks and answers arrive through
/// [`next`](Self::next) until the deadline, after which it returns `None`.
#[derive(Debug)]
pub struct QueryResponse {
    ltime: u64,
    replies: mpsc::UnboundedReceiver<QueryReply>,
}

/// An ack or an answer to one of our queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryReply {
    /// `from` received the query (asked for with `request_ack`).
    Ack { from: String },
    /// `from` answered.
    Response { from: String, payload: Vec<u8> },
}

impl QueryResponse {
    pub(crate) fn new(ltime: u64, replies: mpsc::UnboundedReceiver<QueryReply>) -> Self {
        QueryResponse { ltime, replies }
    }

    /// The query's Lamport time.
    pub fn ltime(&self) -> u64 {
        self.ltime
    }

    /// The next ack or answer; `None` once the query has ended (or the node stopped).
    pub async fn next(&mut self) -> Option<QueryReply> {
        self.replies.recv().await
    }
}

/// A cloneable handle to a running node. Dropping every handle shuts the node down.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) advertise: SocketAddr,
}

impl Handle {
    /// Address the UDP socket and TCP listener are bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address and port we advertise to peers.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Every member we know of, ourselves included, failed and left ones until reaped.
    pub async fn members(&self) -> Result<Vec<Member>, NodeError> {
        self.ask(Command::Members).await
    }

    /// Joins through `addrs` (push/pull with each); with `replay`, user events the cluster saw
    /// before are delivered too (Serf's `-replay`). The number that succeeded, or every error
    /// if none did.
    pub async fn join(&self, addrs: Vec<SocketAddr>, replay: bool) -> Result<usize, NodeError> {
        Ok(self
            .ask(|done| Command::Join {
                addrs,
                replay,
                done,
            })
            .await??)
    }

    /// Sends a query (Serf's `Query`); its acks and answers arrive on the returned
    /// [`QueryResponse`] until the query's deadline.
    pub async fn query(
        &self,
        name: &str,
        payload: &[u8],
        params: QueryParams,
    ) -> Result<QueryResponse, NodeError> {
        let (name, payload) = (name.to_owned(), payload.to_vec());
        Ok(self
            .ask(|done| Command::Query {
                name,
                payload,
                params,
                done,
            })
            .await??)
    }

    /// Answers a query received as `Event::Query`.
    pub async fn respond(&self, ltime: u64, id: u32, payload: &[u8]) -> Result<(), NodeError> {
        let payload = payload.to_vec();
        Ok(self
            .ask(|done| Command::Respond {
                ltime,
                id,
                payload,
                done,
            })
            .await??)
    }

    /// Sends a user event to the cluster (and to ourselves).
    pub async fn user_event(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), NodeError> {
        let (name, payload) = (name.to_owned(), payload.to_vec());
        Ok(self
            .ask(|done| Command::UserEvent {
                name,
                payload,
                coalesce,
                done,
            })
            .await??)
    }

    /// Leaves gracefully; returns once the leave has propagated (Serf's `Leave`). The node keeps
    /// running until [`shutdown`](Self::shutdown).
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(Command::Leave).await
    }

    /// Replaces our tags and announces them, rewriting the tags file first if the node has one
    /// ([`NodeConfig::tags_file`](crate::NodeConfig::tags_file)).
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), NodeError> {
        self.ask(|done| Command::SetTags { tags, done }).await?
    }

    /// Serf's force-leave: marks `node` left (and with `prune` forgets it) everywhere. Returns
    /// once the news has been broadcast, or with an error after the broadcast timeout.
    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), NodeError> {
        let node = node.to_owned();
        Ok(self
            .ask(|done| Command::ForceLeave { node, prune, done })
            .await??)
    }

    /// Runs a key operation across the cluster (`serf keys`): `key` is base64 (ignored for
    /// a listing). Returns once every live member answered or the query timed out.
    pub async fn key_command(
        &self,
        command: KeyCommand,
        key: &str,
    ) -> Result<KeyOutcome, NodeError> {
        let key = key.to_owned();
        self.ask(|done| Command::Key { command, key, done }).await
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.ask(Command::Stats).await
    }

    /// The last Vivaldi coordinate `node` sent us (ours for our own name).
    pub async fn coordinate(&self, node: &str) -> Result<Option<Coordinate>, NodeError> {
        let node = node.to_owned();
        self.ask(|done| Command::Coordinate { node, done }).await
    }

    /// Every [`Event`] from now on, shared between the receivers (a member event's list is
    /// not copied for each). A receiver that falls more than 1024 events behind gets
    /// `RecvError::Lagged` and skips ahead.
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Stops the driver and closes the sockets, without leaving. Returns once it has stopped;
    /// calling it again is harmless.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
}
