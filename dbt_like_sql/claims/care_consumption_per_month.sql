-- Care consumption of the whole population per month, small cells suppressed.
WITH months AS (
    SELECT
        month,
        COUNT(*) AS subjects,
        SUM(events) AS events,
        SUM(dispensations) AS dispensations,
        SUM(amount_eur) AS amount_eur
    FROM {{ ref('care_consumption_per_subject_month') }}
    GROUP BY month
)
SELECT
    month,
    CASE WHEN subjects < 5 THEN NULL ELSE subjects END AS subjects,
    CASE WHEN subjects < 5 THEN NULL ELSE events END AS events,
    CASE WHEN subjects < 5 THEN NULL ELSE dispensations END AS dispensations,
    CASE WHEN subjects < 5 THEN NULL ELSE ROUND(amount_eur, 2) END AS amount_eur,
    subjects < 5 AS suppressed
FROM months
