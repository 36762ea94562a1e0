-- Loyalty points per card holder, from the redemptions the broker delivers.
CREATE TABLE {{.Points}} (
    holder      text   PRIMARY KEY,
    points      bigint NOT NULL,
    redemptions bigint NOT NULL
);
