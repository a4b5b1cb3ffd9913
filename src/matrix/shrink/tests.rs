use super::*;
use crate::matrix::Filter;

fn paper() -> Profile {
    Profile::load(crate::python::project_root(), "paper").unwrap()
}

/// The paper profile shrinks to one cell pair per experiment at its real shapes, labelled a
/// rehearsal, and reads back from the TOML `baddiff shrink` writes.
#[test]
fn a_shrunk_profile_keeps_the_shapes_and_cuts_the_work() {
    let full = paper();
    let s = Shrink::REHEARSAL;
    let shrunk = full.shrunk(&s).unwrap();
    assert_eq!(shrunk.name, "paper-shrunk");
    assert_eq!(shrunk.fidelity, frame::claims::Fidelity::Rehearsal);
    assert_eq!(
        (shrunk.data.size, shrunk.data.channels, &shrunk.data.dataset),
        (full.data.size, full.data.channels, &full.data.dataset)
    );
    assert_eq!(
        shrunk.base, full.base,
        "a released checkpoint stays the base"
    );
    let ft = shrunk.finetune.as_ref().unwrap();
    assert_eq!((ft.steps, ft.batch), (Some(s.train_steps), s.batch));
    assert_eq!(shrunk.measure.n, s.n);
    for (e, f) in shrunk.experiments.iter().zip(&full.experiments) {
        assert_eq!(
            (e.triggers.len(), e.targets.len(), e.seeds.len()),
            (1, 1, 1),
            "{}",
            e.id
        );
        assert!(e.poison_rates.len() <= 2, "{}", e.id);
        assert_eq!(
            e.poison_rates.last(),
            f.poison_rates.iter().max_by(|a, b| a.total_cmp(b))
        );
        assert!(
            e.evals.iter().all(|ev| ev.steps == Some(s.sampling_steps)),
            "{}",
            e.id
        );
        assert!(
            e.defenses.iter().all(|d| d.steps == Some(s.sampling_steps)),
            "{}",
            e.id
        );
        // E3's own 256 px data and model stay; only their amounts shrink.
        if let (Some(d), Some(fd)) = (&e.data, &f.data) {
            assert_eq!((d.size, &d.dataset), (fd.size, &fd.dataset));
        }
        if let Some(m) = &e.measure {
            assert_eq!(m.n, s.n, "{}", e.id);
        }
    }
    let cells = shrunk.cells(&Filter::default()).unwrap();
    assert!(cells.len() < full.cells(&Filter::default()).unwrap().len() / 10);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-shrunk.toml");
    std::fs::write(&path, toml::to_string(&shrunk).unwrap()).unwrap();
    let back = Profile::load(dir.path(), path.to_str().unwrap()).unwrap();
    assert_eq!(back.cells(&Filter::default()).unwrap(), cells);
}

/// fp16 trains only on CUDA: a CPU rehearsal trains in float32; otherwise the setting stays.
#[test]
fn a_cpu_rehearsal_drops_mixed_precision_only() {
    let full = Profile::load(crate::python::project_root(), "kick-the-tires").unwrap();
    assert!(full.finetune.as_ref().unwrap().mixed_precision.is_some());
    let gpu = full.shrunk(&Shrink::REHEARSAL).unwrap();
    assert_eq!(
        gpu.finetune.unwrap().mixed_precision,
        full.finetune.as_ref().unwrap().mixed_precision
    );
    let cpu = full
        .shrunk(&Shrink {
            no_mixed_precision: true,
            ..Shrink::REHEARSAL
        })
        .unwrap();
    assert_eq!(cpu.finetune.unwrap().mixed_precision, None);
}
