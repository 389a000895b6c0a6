-- Care consumption of each person in each month: events by kind and amount reimbursed.
SELECT
    month,
    subject_pseudonym,
    COUNT(*) AS events,
    SUM(CASE WHEN care_type = 'consultation' THEN 1 ELSE 0 END) AS consultations,
    SUM(CASE WHEN care_type = 'pharmacy' THEN 1 ELSE 0 END) AS dispensations,
    SUM(CASE WHEN care_type = 'biology' THEN 1 ELSE 0 END) AS lab_tests,
    SUM(CASE WHEN care_type = 'hospital_stay' THEN 1 ELSE 0 END) AS hospital_stays,
    ROUND(SUM(amount_eur), 2) AS amount_eur
FROM {{ source('claims', 'events') }}
GROUP BY month, subject_pseudonym
