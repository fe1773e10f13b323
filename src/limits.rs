//! Resource limits for reading untrusted patches.

/// Limits applied while reading a patch. Every declared size is checked against
/// them before anything is allocated, so a hostile patch cannot make deltaswap
/// allocate or write more than these values allow.
///
/// The defaults suit system components (libraries, executables, resource packs):
/// outputs up to 16 GiB and an apply memory budget of 52.5 MiB: the 16 MiB
/// segment buffer, a 16 MiB literal zstd window or LZMA dictionary (and under
/// 0.5 MiB of the LZMA decoder's other state), a 16 MiB delta-model history
/// and 3.9 MiB of model tables (docs/MODEL.md). Beyond the budget, and fixed
/// by the format rather than by these limits: a patch's reference map (at
/// most 11.3 MiB decoded and indexed; docs/FORMAT.md) and, for results of
/// 4 MiB and more, 1 MiB of chunks handed to the thread that hashes the
/// result while it is written.
///
/// There is no separate limit on the number of operations: every operation
/// must produce at least one byte (an empty one is
/// [`FormatErrorKind::EmptyOperation`](crate::FormatErrorKind::EmptyOperation)),
/// and a segment's operations are read from its control stream, whose decoded
/// size counts against [`Limits::max_segment_buffer`]; so the work and memory
/// of one apply are bounded by the output length and the segment buffer.
/// Bundles have their own limits, [`BundleLimits`](crate::BundleLimits).
///
/// # Examples
///
/// A patch whose result is larger than the configured maximum is refused before
/// any work is done:
///
/// ```
/// use deltaswap::{Error, Limits, PatchReader};
/// let old = vec![7u8; 1000];
/// let new = vec![9u8; 5000];
/// let patch = deltaswap::diff(&old, &new)?;
/// let limits = Limits::default().max_output_len(4096);
/// let err = PatchReader::with_limits(&patch[..], limits).unwrap_err();
/// assert!(matches!(err, Error::LimitExceeded { what: "target length", .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Limits {
    pub(crate) max_output_len: u64,
    pub(crate) max_segment_buffer: u64,
    pub(crate) max_window_log: u32,
    pub(crate) max_model_len: u64,
}

/// Largest output the default limits accept: 16 GiB.
const DEFAULT_MAX_OUTPUT: u64 = 16 << 30;
/// Default cap on the decoded control and delta streams buffered for one segment.
/// The writer never puts more than 8 MiB there (see `docs/FORMAT.md`), so 16 MiB
/// leaves room without letting a hostile patch claim more.
const DEFAULT_SEGMENT_BUFFER: u64 = 16 << 20;
/// Default largest zstd window accepted for the streamed literal data: 2^24 = 16 MiB.
/// The writer uses at most 2^23.
const DEFAULT_WINDOW_LOG: u32 = 24;
/// Default cap on the deltas one patch codes with the delta model: 64 MiB,
/// the most the writer ever codes with it (files with at most 32 MiB of
/// copies at level 20, 64 MiB at levels 21-22). The model decodes
/// 12-27x slower per byte than a run-layout apply on real patches and up to
/// about 0.65 us per delta on a hostile stream, so
/// this cap, not the output length, bounds the CPU a small hostile patch can
/// ask for (about 45 s of one core, docs/SECURITY.md).
const DEFAULT_MODEL_LEN: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_output_len: DEFAULT_MAX_OUTPUT,
            max_segment_buffer: DEFAULT_SEGMENT_BUFFER,
            max_window_log: DEFAULT_WINDOW_LOG,
            max_model_len: DEFAULT_MODEL_LEN,
        }
    }
}

impl Limits {
    /// The largest result (new file) a patch may declare. Default 16 GiB.
    ///
    /// ```
    /// # use deltaswap::{Error, Limits, PatchReader};
    /// let patch = deltaswap::diff(b"", &[1u8; 100])?;
    /// let err = PatchReader::with_limits(&patch[..], Limits::default().max_output_len(99)).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_output_len(mut self, bytes: u64) -> Limits {
        self.max_output_len = bytes;
        self
    }

    /// The most bytes of decoded control and delta data buffered for one segment,
    /// and the most compressed bytes read for them. Default 16 MiB.
    ///
    /// ```
    /// # use deltaswap::{Error, Limits};
    /// let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    /// let mut new = old.clone();
    /// // Every third byte changed unpredictably: about 16 KiB of coded deltas.
    /// for i in (0..new.len()).step_by(3) { new[i] ^= (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] | 1; }
    /// let patch = deltaswap::diff(&old, &new)?;
    /// let err = deltaswap::apply_with_limits(&old, &patch, Limits::default().max_segment_buffer(1000)).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_segment_buffer(mut self, bytes: u64) -> Limits {
        self.max_segment_buffer = bytes;
        self
    }

    /// The largest window (as a power of two) accepted for data decoded as it
    /// is consumed: the literal stream's zstd window or LZMA dictionary and
    /// the delta model's history (docs/MODEL.md). Default 24 (16 MiB);
    /// clamped to 10..=31.
    ///
    /// ```
    /// # use deltaswap::{Error, Limits};
    /// let new: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    /// let patch = deltaswap::diff(b"", &new)?;
    /// let err = deltaswap::apply_with_limits(b"", &patch, Limits::default().max_window_log(12)).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { .. } | Error::Format(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_window_log(mut self, log: u32) -> Limits {
        self.max_window_log = log.clamp(10, 31);
        self
    }

    /// The most deltas a patch may code with the delta model (codecs 3 and
    /// 5, docs/MODEL.md), summed over its segments. Default 64 MiB.
    ///
    /// The model is what makes library patches small, and it decodes real
    /// patches at 11-24 MB/s where a run-layout apply runs at about 300, and
    /// a hostile stream (every delta nonzero and predictable, a few KiB per
    /// 8 Mi deltas) at about 0.5-0.65 us per delta: without this cap a small
    /// patch could declare gigabytes of model-coded deltas and hold a core for
    /// hours. With the default it gets about 45 s. Every patch the writer makes
    /// stays within the default (it uses the model only from level 20, for
    /// at most 32 MiB of copies, 64 MiB at levels 21-22); a bundle's
    /// components are patches of their own, each with this budget.
    ///
    /// ```
    /// # use deltaswap::{Error, Limits};
    /// let old: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    /// // The byte after every 0xe8 changes: where, the old bytes tell, and the
    /// // writer codes the deltas with the model from level 20.
    /// let mut new = old.clone();
    /// for i in 1..new.len() {
    ///     if old[i - 1] == 0xe8 { new[i] = new[i].wrapping_add(16); }
    /// }
    /// let patch = deltaswap::DiffOptions::new().level(20).diff(&old, &new)?;
    /// assert_eq!(deltaswap::apply(&old, &patch)?, new);
    /// let err = deltaswap::apply_with_limits(&old, &patch, Limits::default().max_model_len(1000)).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { what: "delta-model deltas", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_model_len(mut self, deltas: u64) -> Limits {
        self.max_model_len = deltas;
        self
    }

    /// The configured maximum output length.
    pub fn get_max_output_len(&self) -> u64 {
        self.max_output_len
    }
}
