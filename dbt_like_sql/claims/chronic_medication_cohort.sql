-- People dispensed medication in at least 6 distinct months: a chronic-treatment cohort.
SELECT
    subject_pseudonym,
    MIN(event_date) AS first_dispensation,
    MAX(event_date) AS last_dispensation,
    COUNT(*) AS dispensations,
    COUNT(DISTINCT month) AS months_with_dispensation
FROM {{ source('claims', 'events') }}
WHERE care_type = 'pharmacy'
GROUP BY subject_pseudonym
HAVING COUNT(DISTINCT month) >= 6
