//! Vivaldi network coordinates (spec §4.13), as Serf's `coordinate` package computes them: every
//! direct probe's RTT moves our coordinate, and acks carry it (`01` + msgpack) so any two nodes'
//! distance estimates the RTT between them.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vassal_memberlist::wire::msgpack::{Reader, Writer};
use vassal_memberlist::wire::DecodeError;

/// Version byte in front of the coordinate in an ack payload.
pub const PING_VERSION: u8 = 1;
/// Dimensions of the Vivaldi space (Go's `Dimensionality`).
pub const DIMENSIONALITY: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const ADJUSTMENT_WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const LATENCY_FILTER: usize = 3;
const GRAVITY_RHO: f64 = 150.0;
const ZERO: f64 = 1.0e-6;
const MAX_RTT: Duration = Duration::from_secs(10);
/// Largest magnitude, in seconds, that any component of a peer's coordinate may have. Our own
/// coordinates stay within a few times `MAX_RTT` (10 s); a peer claiming more is lying or broken, and
/// its values would overflow the arithmetic (a height of 1e300 makes a distance no `Duration`
/// holds). Go Serf checks only for NaN and infinities; we also refuse the absurd.
pub const MAX_COORDINATE_COMPONENT: f64 = 1.0e4;

/// A point in the Vivaldi space plus a height (access-link latency) and an adjustment; all in
/// seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinate {
    /// The Euclidean part, [`DIMENSIONALITY`] components.
    pub vec: Vec<f64>,
    /// How confident the node is in its coordinate (lower is better).
    pub error: f64,
    /// A per-node offset learnt from the RTTs it sees.
    pub adjustment: f64,
    /// The access-link latency added to every distance.
    pub height: f64,
}

impl Default for Coordinate {
    fn default() -> Self {
        Coordinate {
            vec: vec![0.0; DIMENSIONALITY],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN,
        }
    }
}

impl Coordinate {
    /// Finite, and no component beyond [`MAX_COORDINATE_COMPONENT`] seconds.
    pub fn is_valid(&self) -> bool {
        let sane = |v: f64| v.is_finite() && v.abs() <= MAX_COORDINATE_COMPONENT;
        self.vec.iter().all(|&v| sane(v))
            && sane(self.error)
            && sane(self.adjustment)
            && sane(self.height)
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// The estimated RTT to `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        let secs = if adjusted > 0.0 { adjusted } else { raw };
        // Never panics: NaN and negatives are zero, anything beyond `Duration` saturates.
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(if secs.is_nan() {
            Duration::ZERO
        } else {
            Duration::MAX
        })
    }

    fn apply_force(&self, force: f64, other: &Coordinate, rng: &mut ChaCha8Rng) -> Coordinate {
        let mut ret = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, rng);
        for (r, u) in ret.vec.iter_mut().zip(&unit) {
            *r += u * force;
        }
        if mag > ZERO {
            ret.height = ((ret.height + other.height) * force / mag + ret.height).max(HEIGHT_MIN);
        }
        ret
    }

    /// `01` + msgpack `{Adjustment, Error, Height, Vec}`, as Serf's ping delegate sends it,
    /// with the figures as msgpack `float32`. Go's decoder reads a `float32` into its `float64`
    /// fields, and seven significant digits are far finer than Vivaldi's estimates (a
    /// nanosecond on a millisecond), so every ack, one per node per second, is 44 bytes
    /// (about a quarter) shorter than Go's own.
    pub fn to_ack_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_buf(vec![PING_VERSION]);
        w.map_header(4);
        w.str("Adjustment");
        write_figure(&mut w, self.adjustment);
        w.str("Error");
        write_figure(&mut w, self.error);
        w.str("Height");
        write_figure(&mut w, self.height);
        w.str("Vec");
        w.array_header(self.vec.len());
        for v in &self.vec {
            write_figure(&mut w, *v);
        }
        w.into_vec()
    }

    /// Reads an ack payload; refuses another version byte and unreadable data.
    pub fn from_ack_payload(payload: &[u8]) -> Result<Coordinate, DecodeError> {
        let Some((&PING_VERSION, body)) = payload.split_first() else {
            return Err(DecodeError::Malformed("unknown ping version".into()));
        };
        let mut c = Coordinate {
            vec: Vec::new(),
            error: 0.0,
            adjustment: 0.0,
            height: 0.0,
        };
        Reader::new(body).read_struct(|k, r| {
            match k {
                b"Adjustment" => c.adjustment = r.f64()?,
                b"Error" => c.error = r.f64()?,
                b"Height" => c.height = r.f64()?,
                b"Vec" => {
                    let n = r.array_len()?;
                    if n > 64 {
                        return Err(DecodeError::Malformed(format!(
                            "coordinate has {n} dimensions"
                        )));
                    }
                    for _ in 0..n {
                        c.vec.push(r.f64()?);
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        if !c.is_valid() {
            return Err(DecodeError::Malformed(format!(
                "coordinate is not finite or beyond {MAX_COORDINATE_COMPONENT} s"
            )));
        }
        Ok(c)
    }
}

/// Our coordinate and what it learned: Serf's `coordinate.Client`.
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    origin: Coordinate,
    adjustment_samples: [f64; ADJUSTMENT_WINDOW],
    adjustment_index: usize,
    latency: BTreeMap<String, Vec<f64>>,
    /// Times the coordinate became invalid and was reset.
    pub resets: u64,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            coord: Coordinate::default(),
            origin: Coordinate::default(),
            adjustment_samples: [0.0; ADJUSTMENT_WINDOW],
            adjustment_index: 0,
            latency: BTreeMap::new(),
            resets: 0,
        }
    }
}

impl Client {
    /// Our current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Forgets a node's RTT samples (when it is reaped).
    pub fn forget(&mut self, node: &str) {
        self.latency.remove(node);
    }

    /// Folds one RTT measurement to `node`, whose coordinate is `other`, into ours.
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), String> {
        if other.vec.len() != DIMENSIONALITY {
            return Err(format!(
                "dimensions aren't compatible: {} != {DIMENSIONALITY}",
                other.vec.len()
            ));
        }
        if !other.is_valid() {
            return Err("coordinate is invalid".into());
        }
        if rtt > MAX_RTT {
            return Err(format!(
                "round trip time not in valid range, duration {rtt:?} is over {MAX_RTT:?}"
            ));
        }
        if rtt.is_zero() {
            metrics::counter!("serf.coordinate.zero-rtt").increment(1);
        }
        let rtt = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt, rng);
        self.update_adjustment(other, rtt);
        self.update_gravity(rng);
        if !self.coord.is_valid() {
            self.resets = self.resets.saturating_add(1);
            self.coord = Coordinate::default();
        }
        Ok(())
    }

    /// The median of the last three samples to `node`.
    fn latency_filter(&mut self, node: &str, rtt: f64) -> f64 {
        let samples = self.latency.entry(node.to_owned()).or_default();
        samples.push(rtt);
        if samples.len() > LATENCY_FILTER {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        // Never empty: `rtt` was just pushed.
        sorted.get(sorted.len() / 2).copied().unwrap_or(rtt)
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64, rng: &mut ChaCha8Rng) {
        let rtt = rtt.max(ZERO);
        let dist = self.coord.distance_to(other).as_secs_f64();
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total_error;
        self.coord.error =
            (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord = self.coord.apply_force(force, other, rng);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        // The index is kept modulo the window, so `get_mut` always finds the slot.
        if let Some(slot) = self.adjustment_samples.get_mut(self.adjustment_index) {
            *slot = rtt - self.coord.raw_distance(other);
        }
        self.adjustment_index = self.adjustment_index.saturating_add(1) % ADJUSTMENT_WINDOW;
        self.coord.adjustment =
            self.adjustment_samples.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);
    }

    fn update_gravity(&mut self, rng: &mut ChaCha8Rng) {
        let dist = self.origin.distance_to(&self.coord).as_secs_f64();
        let force = -(dist / GRAVITY_RHO).powi(2);
        let origin = self.origin.clone();
        self.coord = self.coord.apply_force(force, &origin, rng);
    }
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector from `b` to `a` and the distance; a random direction when they coincide.
fn unit_vector_at(a: &[f64], b: &[f64], rng: &mut ChaCha8Rng) -> (Vec<f64>, f64) {
    let d = diff(a, b);
    let mag = magnitude(&d);
    if mag > ZERO {
        return (d.iter().map(|x| x / mag).collect(), mag);
    }
    let r: Vec<f64> = (0..a.len()).map(|_| rng.gen::<f64>() - 0.5).collect();
    let m = magnitude(&r);
    if m > ZERO {
        return (r.iter().map(|x| x / m).collect(), 0.0);
    }
    let mut unit = vec![0.0; a.len()];
    if let Some(first) = unit.first_mut() {
        *first = 1.0;
    }
    (unit, 0.0)
}

/// One coordinate figure for the wire: a `float32` when it fits one, else the full `float64`
/// (a figure beyond `f32`'s range stays what it is rather than becoming infinite).
fn write_figure(w: &mut Writer, v: f64) {
    let short = v as f32;
    if short.is_finite() || !v.is_finite() {
        w.f32(short);
    } else {
        w.f64(v);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn ack_payload_figures_are_float32_go_reads_into_float64() {
        let c = Coordinate {
            vec: vec![
                0.000_123_456_789,
                -0.002,
                0.0,
                1.5e-7,
                0.0,
                0.0,
                0.0,
                0.000_9,
            ],
            error: 0.734_567_891,
            adjustment: -0.000_012_345_678,
            height: 0.000_043_210_987,
        };
        let p = c.to_ack_payload();
        // 11 figures of `ca` + 4 bytes, where go-msgpack would write `cb` + 8 bytes.
        let as_go_writes = 1 + 1 + (1 + 10) + (1 + 5) + (1 + 6) + (1 + 3) + 1 + 11 * 9;
        assert_eq!(p.len(), as_go_writes - 11 * 4);
        assert_eq!(p.iter().filter(|&&b| b == 0xcb).count(), 0, "{p:02x?}");
        let back = Coordinate::from_ack_payload(&p).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * b.abs().max(1e-9);
        assert!(
            close(back.error, c.error) && close(back.height, c.height),
            "{back:?}"
        );
        assert!(close(back.adjustment, c.adjustment), "{back:?}");
        for (x, y) in back.vec.iter().zip(&c.vec) {
            assert!(close(*x, *y), "{back:?}");
        }
        // A figure too large for a float32 keeps its float64 (and is then refused as invalid).
        let mut w = Writer::with_buf(Vec::new());
        write_figure(&mut w, 1e300);
        assert_eq!(w.into_vec()[0], 0xcb);
    }

    #[test]
    fn ack_payload_round_trips_and_matches_gos_layout() {
        let c = Coordinate::default();
        let p = c.to_ack_payload();
        // spec A.7: 01, then a 4-entry map starting with "Adjustment".
        assert_eq!(&p[..3], &[0x01, 0x84, 0xaa]);
        assert_eq!(&p[3..13], b"Adjustment");
        let back = Coordinate::from_ack_payload(&p).unwrap();
        assert_eq!(back.vec, c.vec);
        assert!((back.height - c.height).abs() < 1e-12, "{back:?}");
        assert!(
            Coordinate::from_ack_payload(&[2, 0x80]).is_err(),
            "other ping versions are refused"
        );
    }

    #[test]
    fn two_clients_learn_their_distance() {
        // Two nodes 10 ms apart, measuring each other: the estimate converges on the RTT.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut a, mut b) = (Client::default(), Client::default());
        let rtt = Duration::from_millis(10);
        for _ in 0..200 {
            let bc = b.coordinate().clone();
            a.update("b", &bc, rtt, &mut rng).unwrap();
            let ac = a.coordinate().clone();
            b.update("a", &ac, rtt, &mut rng).unwrap();
        }
        let est = a.coordinate().distance_to(b.coordinate()).as_secs_f64();
        assert!(
            (est - 0.010).abs() < 0.001,
            "estimated {est} s for a 10 ms link"
        );
    }

    #[test]
    fn bad_coordinates_and_rtts_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut a = Client::default();
        let short = Coordinate {
            vec: vec![0.0; 3],
            ..Coordinate::default()
        };
        assert!(a
            .update("b", &short, Duration::from_millis(1), &mut rng)
            .is_err());
        let nan = Coordinate {
            height: f64::NAN,
            ..Coordinate::default()
        };
        assert!(a
            .update("b", &nan, Duration::from_millis(1), &mut rng)
            .is_err());
        assert!(a
            .update(
                "b",
                &Coordinate::default(),
                Duration::from_secs(11),
                &mut rng
            )
            .is_err());
    }

    // Issue 11, "remote abort": an ack whose coordinate is finite but huge once reached
    // `Duration::from_secs_f64` and aborted the agent.
    #[test]
    fn huge_coordinates_are_refused_and_distances_never_panic() {
        let huge = Coordinate {
            height: 1e300,
            vec: vec![1e300; DIMENSIONALITY],
            ..Coordinate::default()
        };
        assert!(Coordinate::from_ack_payload(&huge.to_ack_payload()).is_err());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut a = Client::default();
        assert!(a
            .update("b", &huge, Duration::from_millis(1), &mut rng)
            .is_err());
        assert_eq!(Coordinate::default().distance_to(&huge), Duration::MAX);
        let nan = Coordinate {
            height: f64::NAN,
            ..Coordinate::default()
        };
        assert_eq!(Coordinate::default().distance_to(&nan), Duration::ZERO);
        let fine = Coordinate {
            height: 0.01,
            ..Coordinate::default()
        };
        assert!(Coordinate::from_ack_payload(&fine.to_ack_payload()).is_ok());
    }
}
