//! What the cluster page shows, as plain data: the JSON shapes of `/cluster.json` and of each
//! server-sent event, built from the node's members, counters, coordinates and events, and the
//! projection of the Vivaldi coordinates onto the page's 2-D map. Nothing here does IO.

use std::collections::BTreeMap;

use serde::Serialize;
use vassal_node::NodeStats;
use vassal_serf::coordinate::Coordinate;
use vassal_serf::{Event, Member, MemberStatus};

/// A user event's or query's payload is shown up to this many characters.
pub const PAYLOAD_SHOWN: usize = 120;
/// Power iterations per axis at most (each is O(n²); the map has at most
/// [`super::MAX_MAP_POINTS`] points).
const MAX_ITERATIONS: usize = 2000;

/// `/cluster.json`: everything the page draws except the event stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterView {
    /// The node serving the page.
    pub node: String,
    pub members: Vec<MemberView>,
    pub map: MapView,
    pub stats: StatsView,
}

/// One member as the table shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    pub name: String,
    /// `ip:port` of its gossip socket (`[ip]:port` for IPv6).
    pub addr: String,
    /// `alive`, `leaving`, `left`, `failed` (Serf's words).
    pub status: &'static str,
    pub tags: BTreeMap<String, String>,
    /// memberlist's protocol versions: `[min, max, current]`.
    pub memberlist_protocol: [u8; 3],
    /// Serf's (the "delegate") protocol versions: `[min, max, current]`.
    pub serf_protocol: [u8; 3],
}

impl MemberView {
    pub fn of(m: &Member) -> Self {
        let [pmin, pmax, pcur, dmin, dmax, dcur] = m.vsn;
        MemberView {
            name: m.name.clone(),
            addr: std::net::SocketAddr::new(m.addr, m.port).to_string(),
            status: m.status.as_str(),
            tags: m.tags.clone(),
            memberlist_protocol: [pmin, pmax, pcur],
            serf_protocol: [dmin, dmax, dcur],
        }
    }
}

/// The health score and queue depths (`serf info`'s figures).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsView {
    /// memberlist's Lifeguard health score: 0 is healthy, higher means this node is slow to
    /// answer probes.
    pub health_score: i32,
    pub members: usize,
    pub failed: usize,
    pub left: usize,
    pub intent_queue: usize,
    pub event_queue: usize,
    pub query_queue: usize,
    pub member_time: u64,
    pub event_time: u64,
    pub query_time: u64,
    pub encrypted: bool,
}

impl StatsView {
    pub fn of(s: &NodeStats) -> Self {
        StatsView {
            health_score: s.health_score,
            members: s.members,
            failed: s.failed,
            left: s.left,
            intent_queue: s.intent_queue,
            event_queue: s.event_queue,
            query_queue: s.query_queue,
            member_time: s.member_time,
            event_time: s.event_time,
            query_time: s.query_time,
            encrypted: s.encrypted,
        }
    }
}

/// The map: one point per alive member, in milliseconds of estimated round-trip time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapView {
    pub points: Vec<Point>,
    /// The largest estimated RTT between two of the points, in ms (the map's scale).
    pub widest_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub name: String,
    pub x: f64,
    pub y: f64,
    /// False while we have no coordinate from this member (it is then placed as if at the
    /// origin of the Vivaldi space).
    pub known: bool,
}

impl MapView {
    /// The map of `alive` members with the coordinates we know (`None`: none yet).
    pub fn of(alive: &[(String, Option<Coordinate>)]) -> Self {
        let coords: Vec<Coordinate> = alive
            .iter()
            .map(|(_, c)| c.clone().unwrap_or_default())
            .collect();
        let rtt = rtt_matrix_ms(&coords);
        let widest_ms = rtt.iter().flatten().copied().fold(0.0, f64::max);
        let xy = classical_mds(&rtt);
        MapView {
            points: alive
                .iter()
                .zip(xy)
                .map(|((name, c), [x, y])| Point {
                    name: name.clone(),
                    x,
                    y,
                    known: c.is_some(),
                })
                .collect(),
            widest_ms,
        }
    }
}

/// The estimated RTT between each pair, in milliseconds (Vivaldi's `distance_to`, height and
/// adjustment included).
pub fn rtt_matrix_ms(coords: &[Coordinate]) -> Vec<Vec<f64>> {
    coords
        .iter()
        .map(|a| {
            coords
                .iter()
                .map(|b| {
                    let ms = a.distance_to(b).as_secs_f64() * 1000.0;
                    if ms.is_finite() {
                        ms
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

/// Classical (Torgerson) multidimensional scaling of a distance matrix onto a plane: the 2-D
/// points whose pairwise distances best match `d` in the least-squares sense of the doubly
/// centred squared distances. We project the pairwise RTT *estimates* rather than the raw 8-D
/// vectors so that height and adjustment (which Vivaldi adds to every distance) count too:
/// nodes the coordinates say are near stay near on the map.
///
/// `B = -½ J D⁽²⁾ J` (J centres rows and columns); its two largest eigenpairs, found by power
/// iteration with deflation, give `x = √λ₁ v₁`, `y = √λ₂ v₂`. Each axis's sign is fixed so that
/// its largest-magnitude entry is positive, so the map does not mirror itself between polls.
/// Any non-finite or negative input distance is read as 0; a non-square `d` gives the origin
/// for every row.
pub fn classical_mds(d: &[Vec<f64>]) -> Vec<[f64; 2]> {
    let n = d.len();
    if n == 0 {
        return Vec::new();
    }
    if d.iter().any(|row| row.len() != n) {
        return vec![[0.0, 0.0]; n];
    }
    let sq: Vec<Vec<f64>> = d
        .iter()
        .map(|row| {
            row.iter()
                .map(|&v| if v.is_finite() && v > 0.0 { v * v } else { 0.0 })
                .collect()
        })
        .collect();
    let nf = n as f64;
    let row_mean: Vec<f64> = sq.iter().map(|r| r.iter().sum::<f64>() / nf).collect();
    let col_mean: Vec<f64> = (0..n)
        .map(|j| sq.iter().map(|r| r[j]).sum::<f64>() / nf)
        .collect();
    let grand = row_mean.iter().sum::<f64>() / nf;
    let mut b: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| -0.5 * (sq[i][j] - row_mean[i] - col_mean[j] + grand))
                .collect()
        })
        .collect();
    let mut axes = [vec![0.0; n], vec![0.0; n]];
    for axis in &mut axes {
        let (lambda, v) = top_eigen(&b);
        if lambda <= 1e-12 {
            break;
        }
        let scale = lambda.sqrt();
        for (a, x) in axis.iter_mut().zip(&v) {
            *a = x * scale;
        }
        // Deflate: remove this eigenpair so the next power iteration finds the next one.
        for i in 0..n {
            for j in 0..n {
                b[i][j] -= lambda * v[i] * v[j];
            }
        }
    }
    let [xs, ys] = axes;
    xs.into_iter().zip(ys).map(|(x, y)| [x, y]).collect()
}

/// The largest (most positive) eigenvalue of the symmetric matrix `b` and its unit
/// eigenvector, by power iteration on `b + sI` from a fixed, uneven start (so results repeat
/// from one call to the next). The shift `s` (Gershgorin's bound on every eigenvalue's
/// magnitude) makes the shifted matrix positive semi-definite, so the iteration finds the most
/// positive eigenvalue even when RTT estimates that no plane can hold give `b` negative ones.
fn top_eigen(b: &[Vec<f64>]) -> (f64, Vec<f64>) {
    let n = b.len();
    let shift = b
        .iter()
        .map(|row| row.iter().map(|x| x.abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + ((i * 37 + 11) % 17) as f64).collect();
    normalise(&mut v);
    for _ in 0..MAX_ITERATIONS {
        let mut w: Vec<f64> = b
            .iter()
            .zip(&v)
            .map(|(row, vi)| row.iter().zip(&v).map(|(a, x)| a * x).sum::<f64>() + shift * vi)
            .collect();
        let norm = normalise(&mut w);
        if norm == 0.0 || !norm.is_finite() {
            return (0.0, vec![0.0; n]);
        }
        let moved = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum::<f64>();
        v = w;
        if moved < 1e-13 {
            break;
        }
    }
    // The Rayleigh quotient of the unshifted matrix is the eigenvalue.
    let lambda: f64 = b
        .iter()
        .zip(&v)
        .map(|(row, vi)| vi * row.iter().zip(&v).map(|(a, x)| a * x).sum::<f64>())
        .sum();
    let biggest = v
        .iter()
        .copied()
        .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
    if biggest < 0.0 {
        for x in &mut v {
            *x = -*x;
        }
    }
    (lambda, v)
}

fn normalise(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
    norm
}

/// One entry of the event stream (an SSE `data:` line), as the page lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventView {
    /// Counts up from 1 on this page's server; the SSE `id`, so a reconnecting browser
    /// resumes after the last one it saw.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch when the page's server saw it.
    pub unix_ms: u64,
    /// `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user`,
    /// `query`.
    pub kind: &'static str,
    /// The members a member event is about, with their status now.
    pub members: Vec<EventMember>,
    /// A user event's or query's name.
    pub name: Option<String>,
    /// Its payload, as text, cut to [`PAYLOAD_SHOWN`] characters.
    pub payload: Option<String>,
    /// The node that sent a query.
    pub from: Option<String>,
    /// A user event's or query's Lamport time.
    pub ltime: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventMember {
    pub name: String,
    pub addr: String,
    pub status: &'static str,
}

impl EventView {
    pub fn of(e: &Event, seq: u64, unix_ms: u64) -> Self {
        let mut v = EventView {
            seq,
            unix_ms,
            kind: e.kind(),
            members: Vec::new(),
            name: None,
            payload: None,
            from: None,
            ltime: None,
        };
        match e {
            Event::Member(m) => {
                v.members = m
                    .members
                    .iter()
                    .map(|m| EventMember {
                        name: m.name.clone(),
                        addr: std::net::SocketAddr::new(m.addr, m.port).to_string(),
                        status: m.status.as_str(),
                    })
                    .collect();
            }
            Event::User(u) => {
                v.name = Some(u.name.clone());
                v.payload = Some(shown(&u.payload));
                v.ltime = Some(u.ltime);
            }
            Event::Query(q) => {
                v.name = Some(q.name.clone());
                v.payload = Some(shown(&q.payload));
                v.from = Some(q.source_node.clone());
                v.ltime = Some(q.ltime);
            }
        }
        v
    }
}

/// A payload as text: invalid UTF-8 replaced, cut at [`PAYLOAD_SHOWN`] characters (`…` marks
/// the cut).
fn shown(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut out: String = text.chars().take(PAYLOAD_SHOWN).collect();
    if text.chars().nth(PAYLOAD_SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// Members whose point goes on the map: the alive ones (not leaving, left or failed).
pub fn on_map(m: &Member) -> bool {
    m.status == MemberStatus::Alive
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use vassal_serf::{MemberEvent, MemberEventKind, UserEvent};

    fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    fn matrix(points: &[[f64; 2]]) -> Vec<Vec<f64>> {
        points
            .iter()
            .map(|&a| points.iter().map(|&b| dist(a, b)).collect())
            .collect()
    }

    #[test]
    fn mds_recovers_the_distances_of_points_on_a_plane() {
        let points = [
            [0.0, 0.0],
            [3.0, 0.0],
            [0.0, 4.0],
            [10.0, 10.0],
            [-2.0, 7.0],
        ];
        let d = matrix(&points);
        let xy = classical_mds(&d);
        assert_eq!(xy.len(), points.len());
        for i in 0..points.len() {
            for j in 0..points.len() {
                let got = dist(xy[i], xy[j]);
                assert!(
                    (got - d[i][j]).abs() < 1e-6,
                    "{i}-{j}: {got} vs {}",
                    d[i][j]
                );
            }
        }
    }

    #[test]
    fn mds_keeps_near_nodes_near_when_the_space_has_more_dimensions() {
        // Two tight groups far apart in 8-D: on the map each node is nearer its own group.
        let mut a = Coordinate::default();
        let mut coords = Vec::new();
        for g in 0..2 {
            for k in 0..3 {
                a.vec = vec![0.0; 8];
                a.vec[g * 4] = 0.050 * g as f64;
                a.vec[k + 1] += 0.001 * k as f64;
                a.vec[7] = 0.0005 * k as f64;
                coords.push(a.clone());
            }
        }
        let xy = classical_mds(&rtt_matrix_ms(&coords));
        for i in 0..6 {
            for j in 0..6 {
                for k in 0..6 {
                    if i / 3 == j / 3 && i / 3 != k / 3 {
                        assert!(dist(xy[i], xy[j]) < dist(xy[i], xy[k]), "{xy:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn mds_handles_no_one_and_two_nodes_and_bad_input() {
        assert!(classical_mds(&[]).is_empty());
        assert_eq!(classical_mds(&[vec![0.0]]), vec![[0.0, 0.0]]);
        let two = classical_mds(&[vec![0.0, 2.0], vec![2.0, 0.0]]);
        assert!((dist(two[0], two[1]) - 2.0).abs() < 1e-9, "{two:?}");
        let bad = classical_mds(&[vec![0.0, f64::NAN], vec![f64::INFINITY, 0.0]]);
        assert!(bad.iter().flatten().all(|v| v.is_finite()), "{bad:?}");
        assert_eq!(classical_mds(&[vec![0.0], vec![]]), vec![[0.0, 0.0]; 2]);
    }

    #[test]
    fn mds_gives_the_same_map_every_time() {
        let d = matrix(&[[1.0, 2.0], [5.0, -1.0], [0.5, 9.0], [-4.0, 0.0]]);
        assert_eq!(classical_mds(&d), classical_mds(&d));
    }

    fn member(name: &str, status: MemberStatus) -> Member {
        Member {
            name: name.into(),
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)),
            port: 7946,
            tags: [("role".to_owned(), "web".to_owned())].into(),
            status,
            vsn: [1, 5, 2, 2, 5, 4],
        }
    }

    #[test]
    fn a_member_shows_its_address_status_tags_and_protocols() {
        let v =
            serde_json::to_value(MemberView::of(&member("web-1", MemberStatus::Failed))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "web-1", "addr": "127.0.0.10:7946", "status": "failed",
                "tags": {"role": "web"},
                "memberlist_protocol": [1, 5, 2], "serf_protocol": [2, 5, 4],
            })
        );
    }

    #[test]
    fn the_map_has_one_point_per_alive_member_and_marks_unknown_coordinates() {
        let mut near = Coordinate::default();
        near.vec[0] = 0.002;
        let map = MapView::of(&[
            ("a".into(), Some(Coordinate::default())),
            ("b".into(), Some(near)),
            ("c".into(), None),
        ]);
        let names: Vec<_> = map.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            map.points.iter().map(|p| p.known).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert!(map.widest_ms > 1.9 && map.widest_ms < 2.1, "{map:?}");
        assert!(on_map(&member("x", MemberStatus::Alive)));
        for s in [
            MemberStatus::Leaving,
            MemberStatus::Left,
            MemberStatus::Failed,
        ] {
            assert!(!on_map(&member("x", s)));
        }
    }

    #[test]
    fn events_become_the_streams_json() {
        let failed = Event::Member(MemberEvent {
            kind: MemberEventKind::Failed,
            members: vec![member("web-2", MemberStatus::Failed)],
        });
        let v = serde_json::to_value(EventView::of(&failed, 7, 1000)).unwrap();
        assert_eq!(v["kind"], "member-failed");
        assert_eq!(v["seq"], 7);
        assert_eq!(
            v["members"],
            serde_json::json!([{"name": "web-2", "addr": "127.0.0.10:7946", "status": "failed"}])
        );
        let user = Event::User(UserEvent {
            ltime: 3,
            name: "deploy".into(),
            payload: vec![b'x'; PAYLOAD_SHOWN + 5],
            cc: false,
        });
        let v = EventView::of(&user, 8, 1001);
        assert_eq!(v.kind, "user");
        assert_eq!(v.name.as_deref(), Some("deploy"));
        assert_eq!(v.ltime, Some(3));
        let p = v.payload.unwrap();
        assert_eq!(p.chars().count(), PAYLOAD_SHOWN + 1);
        assert!(p.ends_with('…'));
        // Invalid UTF-8 from the network is shown, not refused.
        assert_eq!(shown(&[0xff, b'a']), "\u{fffd}a");
    }
}
