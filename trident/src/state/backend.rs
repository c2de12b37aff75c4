//! [`MapBackend`]: the storage under a map state, and [`FlakyBackend`], a backend whose
//! writes fail on purpose.

use super::StateError;

/// A stored key and its value, as a backend holds them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Raw storage of a map state (Storm's `IBackingMap`): keys and values are byte
/// strings (the flavours encode them). Implement it to add a store.
///
/// Each call should be one round trip to the store, whatever the number of keys.
pub trait MapBackend: Send + 'static {
    /// The values at `keys`, in order (`None`: absent).
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Writes `values` at `keys` (same length). On an error, any subset of the keys may
    /// have been written.
    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError>;
}

impl<B: MapBackend + ?Sized> MapBackend for Box<B> {
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        (**self).multi_get(keys)
    }

    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
        (**self).multi_put(keys, values)
    }
}

/// A backend whose writes fail at random, to test exactly-once under failure.
///
/// Each non-empty [`multi_put`](MapBackend::multi_put) fails with probability `p`. Half
/// of the failures first write a random prefix of the keys (anything from none to all
/// of them), as a process that crashes in the middle of a commit, or whose write
/// succeeded but whose answer was lost, would leave the store. Reads never fail. The
/// failures come from a seeded generator, so a test that fails can be replayed.
pub struct FlakyBackend<B> {
    inner: B,
    p: f64,
    rng: fastrand::Rng,
    failures: u64,
}

impl<B: MapBackend> FlakyBackend<B> {
    /// Wraps `inner`: writes fail with probability `p` (`0.0..=1.0`), drawn from a
    /// generator seeded with `seed`.
    ///
    /// # Errors
    /// When `p` is not a probability.
    pub fn new(inner: B, p: f64, seed: u64) -> Result<Self, StateError> {
        check_probability(p)?;
        Ok(FlakyBackend {
            inner,
            p,
            rng: fastrand::Rng::with_seed(seed),
            failures: 0,
        })
    }

    /// How many writes failed on purpose so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutably (writes through it never fail).
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

/// Checks that a write failure probability is one.
pub(crate) fn check_probability(p: f64) -> Result<(), StateError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(StateError::new(format!(
            "write failure probability must be between 0 and 1, got {p}"
        )))
    }
}

impl<B: MapBackend> MapBackend for FlakyBackend<B> {
    fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner.multi_get(keys)
    }

    fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
        if keys.is_empty() || self.rng.f64() >= self.p {
            return self.inner.multi_put(keys, values);
        }
        self.failures += 1;
        let written = if self.rng.bool() {
            let n = self.rng.usize(0..=keys.len());
            self.inner.multi_put(&keys[..n], &values[..n])?;
            n
        } else {
            0
        };
        Err(StateError::new(format!(
            "injected write failure (FlakyBackend) after writing {written} of {} keys",
            keys.len()
        )))
    }
}

/// Where to inject write failures, as set by a factory's `with_write_failures`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct WriteFailures {
    pub(crate) p: f64,
    pub(crate) seed: u64,
}

impl WriteFailures {
    /// Wraps a partition's backend; each partition draws from its own seed.
    pub(crate) fn wrap(
        failures: Option<WriteFailures>,
        backend: Box<dyn MapBackend>,
        partition: usize,
    ) -> Result<Box<dyn MapBackend>, StateError> {
        Ok(match failures {
            None => backend,
            Some(f) => Box::new(FlakyBackend::new(
                backend,
                f.p,
                f.seed
                    .wrapping_add((partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Plain(HashMap<Vec<u8>, Vec<u8>>);

    impl MapBackend for Plain {
        fn multi_get(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
            Ok(keys.iter().map(|k| self.0.get(k).cloned()).collect())
        }
        fn multi_put(&mut self, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Result<(), StateError> {
            for (k, v) in keys.iter().zip(values) {
                self.0.insert(k.clone(), v.clone());
            }
            Ok(())
        }
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8]).collect()
    }

    #[test]
    fn never_and_always() {
        let mut never = FlakyBackend::new(Plain::default(), 0.0, 1).unwrap();
        let mut always = FlakyBackend::new(Plain::default(), 1.0, 1).unwrap();
        for _ in 0..50 {
            never.multi_put(&keys(3), &keys(3)).unwrap();
            let err = always.multi_put(&keys(3), &keys(3)).unwrap_err();
            assert!(err.0.contains("injected write failure"), "{err}");
        }
        assert_eq!(never.failures(), 0);
        assert_eq!(always.failures(), 50);
        // Reads never fail, even when every write does.
        assert_eq!(always.multi_get(&keys(1)).unwrap().len(), 1);
        // An empty write has nothing to fail.
        always.multi_put(&[], &[]).unwrap();
    }

    #[test]
    fn failures_are_reproducible_and_some_are_partial() {
        let run = |seed| {
            let mut b = FlakyBackend::new(Plain::default(), 0.5, seed).unwrap();
            let mut outcomes = Vec::new();
            for round in 0..200u8 {
                let ks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![round, i]).collect();
                let ok = b.multi_put(&ks, &ks).is_ok();
                let present = b.inner().multi_get_count(&ks);
                outcomes.push((ok, present));
            }
            outcomes
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same failures");
        assert_ne!(a, run(8));
        let failed = a.iter().filter(|(ok, _)| !ok).count();
        assert!((50..150).contains(&failed), "about half fail: {failed}");
        assert!(a.iter().all(|&(ok, n)| !ok || n == 10));
        assert!(
            a.iter().any(|&(ok, n)| !ok && n > 0 && n < 10),
            "some failures write part of the keys"
        );
        assert!(a.iter().any(|&(ok, n)| !ok && n == 0));
    }

    impl Plain {
        fn multi_get_count(&self, keys: &[Vec<u8>]) -> usize {
            keys.iter().filter(|k| self.0.contains_key(*k)).count()
        }
    }

    #[test]
    fn bad_probability_is_refused() {
        let err = FlakyBackend::new(Plain::default(), 1.5, 0).err().unwrap();
        assert_eq!(
            err.0,
            "write failure probability must be between 0 and 1, got 1.5"
        );
        assert!(FlakyBackend::new(Plain::default(), f64::NAN, 0).is_err());
    }
}
