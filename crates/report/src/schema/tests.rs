use super::*;
use crate::fixture;

fn fixture_frame() -> DataFrame {
    frame_from_rows(&fixture::rows()).unwrap()
}

#[test]
fn fixture_round_trips_through_a_frame_and_parquet() {
    let rows = fixture::rows();
    let df = frame_from_rows(&rows).unwrap();
    assert_eq!(df.width(), COLUMNS.len());
    assert_eq!(rows_from_frame(&df).unwrap(), rows);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FRAME_FILE);
    write_rows(&path, &rows).unwrap();
    assert_eq!(read_rows(&path).unwrap(), rows);
}

#[test]
fn missing_columns_are_all_named() {
    let df = fixture_frame()
        .drop("poison_rate")
        .unwrap()
        .drop("protocol")
        .unwrap();
    let msg = validate(&df).unwrap_err().to_string();
    assert!(
        msg.contains("poison_rate") && msg.contains("protocol"),
        "{msg}"
    );
}

#[test]
fn a_wrongly_typed_column_is_named() {
    let mut df = fixture_frame();
    let seeds: Vec<f64> = vec![0.0; df.height()];
    df.with_column(Column::new("seed".into(), seeds)).unwrap();
    let msg = validate(&df).unwrap_err().to_string();
    assert!(
        msg.contains("`seed`") && msg.contains("f64") && msg.contains("i64"),
        "{msg}"
    );
}

#[test]
fn nulls_are_refused_except_in_defense_epoch() {
    let mut df = fixture_frame();
    let mut values: Vec<Option<f64>> = vec![Some(1.0); df.height()];
    values[3] = None;
    df.with_column(Column::new("value".into(), values)).unwrap();
    let msg = validate(&df).unwrap_err().to_string();
    assert!(msg.contains("`value`") && msg.contains("null"), "{msg}");
    // defense_epoch is null on every non-ANP row of the fixture and that is fine.
    assert!(validate(&fixture_frame()).is_ok());
}

#[test]
fn values_outside_a_closed_set_are_named() {
    let mut rows = fixture::rows();
    rows[5].training = "fine-tune".into();
    let df = frame_from_rows(&rows).unwrap();
    let msg = validate(&df).unwrap_err().to_string();
    assert!(
        msg.contains("`training`") && msg.contains("fine-tune") && msg.contains("row 5"),
        "{msg}"
    );
}

#[test]
fn a_proxy_is_never_labelled_fid() {
    assert_eq!(utility_label("FID"), "FID");
    let label = utility_label("FD_fmnist_cnn");
    assert!(
        label.starts_with("FD_fmnist_cnn") && label.contains("proxy"),
        "{label}"
    );
    assert!(is_utility_metric("FD_fmnist_cnn") && !is_utility_metric("MSE"));
}

/// A frame written before `schedule_share` and `corruption` existed reads as finished models
/// sampled from noise.
#[test]
fn frames_from_before_the_later_columns_still_read() {
    let rows: Vec<Row> = fixture::rows()
        .into_iter()
        .filter(|r| r.schedule_share == 1.0 && r.corruption == "none")
        .collect();
    let mut df = frame_from_rows(&rows).unwrap();
    let _ = df.drop_in_place("schedule_share").unwrap();
    let _ = df.drop_in_place("corruption").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FRAME_FILE);
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    assert_eq!(read_rows(&path).unwrap(), rows);
}
