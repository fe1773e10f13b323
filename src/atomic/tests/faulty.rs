//! A wrapper around any [`Fs`] that counts operations, logs their names, and
//! can fail the k-th one (once or from then on), cut the power after k
//! operations, or call a hook before each one.
//!
//! Also compiled (without the test suites) under the `fuzzing` feature.
#![cfg_attr(not(test), allow(dead_code))]

use std::cell::{Cell, RefCell};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::fs::{Fs, Space, Stat};

/// What to do to the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Pass everything through.
    Pass,
    /// Operation `k` (0-based) fails with `errno`; with `persistent`, so does
    /// every later one.
    FailAt {
        k: usize,
        errno: i32,
        persistent: bool,
    },
    /// Operations `k` and later do not happen (`EIO`): the machine is off.
    PowerCutAfter(usize),
}

type Hook<'a> = Box<dyn FnMut(usize, &'static str) + 'a>;

pub(crate) struct Faulty<'a, F> {
    inner: &'a F,
    plan: Plan,
    count: Cell<usize>,
    log: RefCell<Vec<&'static str>>,
    hook: RefCell<Option<Hook<'a>>>,
}

impl<'a, F: Fs> Faulty<'a, F> {
    pub(crate) fn new(inner: &'a F, plan: Plan) -> Self {
        Faulty {
            inner,
            plan,
            count: Cell::new(0),
            log: RefCell::new(Vec::new()),
            hook: RefCell::new(None),
        }
    }

    /// Calls `hook(index, name)` before each operation runs.
    pub(crate) fn with_hook(inner: &'a F, hook: impl FnMut(usize, &'static str) + 'a) -> Self {
        let f = Faulty::new(inner, Plan::Pass);
        *f.hook.borrow_mut() = Some(Box::new(hook));
        f
    }

    /// Operations attempted so far.
    pub(crate) fn count(&self) -> usize {
        self.count.get()
    }

    /// Names of the operations attempted so far.
    pub(crate) fn log(&self) -> Vec<&'static str> {
        self.log.borrow().clone()
    }

    fn gate(&self, op: &'static str) -> io::Result<()> {
        let i = self.count.get();
        self.count.set(i + 1);
        self.log.borrow_mut().push(op);
        if let Some(h) = self.hook.borrow_mut().as_mut() {
            h(i, op);
        }
        match self.plan {
            Plan::FailAt {
                k,
                errno,
                persistent,
            } if i == k || (persistent && i > k) => Err(io::Error::from_raw_os_error(errno)),
            Plan::PowerCutAfter(k) if i >= k => Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            )),
            _ => Ok(()),
        }
    }
}

impl<F: Fs> Fs for Faulty<'_, F> {
    type Dir = F::Dir;
    type File = F::File;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.gate("canonicalize")?;
        self.inner.canonicalize(path)
    }
    fn open_dir(&self, path: &Path) -> io::Result<F::Dir> {
        self.gate("open_dir")?;
        self.inner.open_dir(path)
    }
    fn stat_at(&self, dir: &F::Dir, name: &OsStr) -> io::Result<Stat> {
        self.gate("stat_at")?;
        self.inner.stat_at(dir, name)
    }
    fn open_read(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::File> {
        self.gate("open_read")?;
        self.inner.open_read(dir, name)
    }
    fn stat(&self, file: &F::File) -> io::Result<Stat> {
        self.gate("stat")?;
        self.inner.stat(file)
    }
    fn lock(&self, file: &F::File, wait: bool) -> io::Result<()> {
        self.gate("lock")?;
        self.inner.lock(file, wait)
    }
    fn space(&self, dir: &F::Dir) -> io::Result<Space> {
        self.gate("space")?;
        self.inner.space(dir)
    }
    fn read_at(&self, file: &F::File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.gate("read_at")?;
        self.inner.read_at(file, offset, buf)
    }
    fn create_new(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::File> {
        self.gate("create_new")?;
        self.inner.create_new(dir, name)
    }
    fn write_all(&self, file: &F::File, data: &[u8]) -> io::Result<()> {
        self.gate("write_all")?;
        self.inner.write_all(file, data)
    }
    fn set_owner(&self, file: &F::File, uid: u32, gid: u32) -> io::Result<()> {
        self.gate("set_owner")?;
        self.inner.set_owner(file, uid, gid)
    }
    fn set_mode(&self, file: &F::File, mode: u32) -> io::Result<()> {
        self.gate("set_mode")?;
        self.inner.set_mode(file, mode)
    }
    fn xattr_names(&self, file: &F::File) -> io::Result<Vec<OsString>> {
        self.gate("xattr_names")?;
        self.inner.xattr_names(file)
    }
    fn get_xattr(&self, file: &F::File, name: &OsStr) -> io::Result<Vec<u8>> {
        self.gate("get_xattr")?;
        self.inner.get_xattr(file, name)
    }
    fn set_xattr(&self, file: &F::File, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.gate("set_xattr")?;
        self.inner.set_xattr(file, name, value)
    }
    fn remove_xattr(&self, file: &F::File, name: &OsStr) -> io::Result<()> {
        self.gate("remove_xattr")?;
        self.inner.remove_xattr(file, name)
    }
    fn sync(&self, file: &F::File) -> io::Result<()> {
        self.gate("sync")?;
        self.inner.sync(file)
    }
    fn exchange(&self, dir: &F::Dir, a: &OsStr, b: &OsStr) -> io::Result<()> {
        self.gate("exchange")?;
        self.inner.exchange(dir, a, b)
    }
    fn rename(
        &self,
        from_dir: &F::Dir,
        from: &OsStr,
        to_dir: &F::Dir,
        to: &OsStr,
    ) -> io::Result<()> {
        self.gate("rename")?;
        self.inner.rename(from_dir, from, to_dir, to)
    }
    fn link(&self, from_dir: &F::Dir, from: &OsStr, to_dir: &F::Dir, to: &OsStr) -> io::Result<()> {
        self.gate("link")?;
        self.inner.link(from_dir, from, to_dir, to)
    }
    fn unlink(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        self.gate("unlink")?;
        self.inner.unlink(dir, name)
    }
    fn sync_dir(&self, dir: &F::Dir) -> io::Result<()> {
        self.gate("sync_dir")?;
        self.inner.sync_dir(dir)
    }
    fn list_dir(&self, dir: &F::Dir) -> io::Result<Vec<OsString>> {
        self.gate("list_dir")?;
        self.inner.list_dir(dir)
    }
    fn open_dir_at(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::Dir> {
        self.gate("open_dir_at")?;
        self.inner.open_dir_at(dir, name)
    }
    fn create_dir(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        self.gate("create_dir")?;
        self.inner.create_dir(dir, name)
    }
    fn remove_dir(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        self.gate("remove_dir")?;
        self.inner.remove_dir(dir, name)
    }
}
