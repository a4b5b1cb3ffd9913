//! Named points in a write sequence where tests make the process "die": `hit` fails there, so
//! every intermediate state a `kill -9` could leave on disk can be reproduced and resumed from.
//! Outside tests `hit` is a no-op the compiler removes.

#[cfg(test)]
use std::cell::RefCell;

#[cfg(test)]
thread_local! {
    /// The armed point's name and how many more hits pass before it fails.
    static ARMED: RefCell<Option<(String, usize)>> = const { RefCell::new(None) };
}

/// Makes the `nth` (0-based) hit of `name` on this thread fail; `None` disarms.
#[cfg(test)]
pub fn arm(point: Option<(&str, usize)>) {
    ARMED.with(|a| *a.borrow_mut() = point.map(|(n, k)| (n.to_string(), k)));
}

/// Fails with `failpoint NAME` if this point is armed and its turn has come (then disarms).
#[cfg(test)]
pub fn hit(name: &str) -> anyhow::Result<()> {
    ARMED.with(|a| {
        let mut a = a.borrow_mut();
        match a.as_mut() {
            Some((n, 0)) if n == name => {
                *a = None;
                anyhow::bail!("failpoint {name}")
            }
            Some((n, k)) if n == name => {
                *k -= 1;
                Ok(())
            }
            _ => Ok(()),
        }
    })
}

#[cfg(not(test))]
#[inline(always)]
pub fn hit(_name: &str) -> anyhow::Result<()> {
    Ok(())
}
