-- Imaging activity per modality and month, with small cells suppressed (published as null).
WITH cells AS (
    SELECT
        DATE_TRUNC('month', series.study_date) AS month,
        series.modality,
        COUNT(DISTINCT series.study_instance_uid) AS studies,
        COUNT(DISTINCT series.subject_pseudonym) AS subjects
    FROM {{ source('imaging', 'dicom_series') }} AS series
    WHERE series.study_date IS NOT NULL
    GROUP BY DATE_TRUNC('month', series.study_date), series.modality
)
SELECT
    CAST(month AS DATE) AS month,
    modality,
    CASE WHEN subjects < 3 THEN NULL ELSE studies END AS studies,
    CASE WHEN subjects < 3 THEN NULL ELSE subjects END AS subjects,
    subjects < 3 AS suppressed
FROM cells
