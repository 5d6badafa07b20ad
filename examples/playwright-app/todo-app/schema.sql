CREATE TABLE todos (
  id serial PRIMARY KEY,
  title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
  done boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE todos OWNER TO todo;

INSERT INTO todos (title, done, created_at) VALUES
  ('Buy milk', false, '2024-01-01 09:00:00+00'),
  ('Walk the dog', true, '2024-01-01 09:05:00+00'),
  ('Read a book', false, '2024-01-01 09:10:00+00');

