use aula::prelude::*;
