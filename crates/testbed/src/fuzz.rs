//! Seeded input generators for fuzz tests: a tiny xorshift generator and a mutator of byte
//! strings. The same seed gives the same inputs, so a failure names its seed and is replayable.
/// xorshift64*: tiny, seeded, good enough to drive fuzzing.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Interesting integers: edges of every width, small values, anything.
    pub fn int(&mut self) -> i64 {
        match self.below(6) {
            0 => *self.pick(&[0, 1, -1, 127, 128, 255, 256, -128, -129]),
            1 => *self.pick(&[
                i64::from(i32::MAX),
                i64::from(i32::MIN),
                i64::from(u32::MAX),
                i64::MAX,
                i64::MIN,
            ]),
            2 => self.below(10) as i64,
            _ => self.next_u64() as i64 >> self.below(64),
        }
    }
}

/// Bit flips, byte changes, inserts, deletes, duplicated slices and truncation.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.byte());
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(7) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.byte(),
            2 => out.insert(at, rng.byte()),
            3 => {
                out.remove(at);
            }
            4 => out.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                let chunk = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, chunk);
            }
            _ => out[at] = *rng.pick(&[0x00, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff]),
        }
    }
    out
}
