SELECT likes FROM flips WHERE 0;
